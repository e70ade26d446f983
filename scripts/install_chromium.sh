#!/usr/bin/env bash
# Idempotent: install headless Chromium (Debian package "chromium") for the report browser
# test. Skips everything when Chromium is there ($AUDITOR_CHROMIUM, default
# /usr/bin/chromium). Uses apt-get as root or through sudo, as on CI; where apt-get cannot
# run it says so and exits 0, and the browser test is skipped with that reason.
# Usage: bash scripts/install_chromium.sh
set -euo pipefail
CHROMIUM=${AUDITOR_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
. "$(dirname "$0")/_apt.sh"
WHY="the report's headless-browser test (tests/report/test_report_browser.py) is skipped"
apt_install install_chromium "$WHY" chromium fonts-dejavu-core
if [ -x "$CHROMIUM" ]; then
  echo "[install_chromium] ready: $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
elif apt_can_run; then
  echo "[install_chromium] $CHROMIUM is still missing: the browser test will fail" >&2
fi
