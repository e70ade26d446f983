#!/usr/bin/env bash
# Idempotent: install headless Chromium (Debian package "chromium") for the report browser test.
# Skips everything when /usr/bin/chromium already exists. Needs root (apt-get), as on CI.
# Usage: bash scripts/install_chromium.sh
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "[install_chromium] installing the Debian package chromium"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "[install_chromium] ERROR: /usr/bin/chromium missing after apt-get install" >&2
  exit 1
fi
echo "[install_chromium] ready: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
