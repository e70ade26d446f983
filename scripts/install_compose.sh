#!/usr/bin/env bash
# Idempotent: install docker-compose (Debian package "docker-compose") for the test that
# validates docker-compose.yml with `docker-compose config` (no container engine runs).
# Skips everything when docker-compose is already on PATH. Uses apt-get as root or through
# sudo, as on CI; where apt-get cannot run it says so and exits 0 (the test then skips).
# Usage: bash scripts/install_compose.sh
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
. "$(dirname "$0")/_apt.sh"
apt_install install_compose "tests/queue/test_compose.py is skipped" docker-compose
if command -v docker-compose >/dev/null 2>&1; then
  echo "[install_compose] ready: $(docker-compose version --short 2>/dev/null || echo docker-compose)"
else
  echo "[install_compose] docker-compose is not installed: tests/queue/test_compose.py is skipped" >&2
fi
