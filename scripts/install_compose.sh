#!/usr/bin/env bash
# Idempotent: install docker-compose (Debian package "docker-compose") for the test that
# validates docker-compose.yml with `docker-compose config` (no container engine runs).
# Skips everything when docker-compose is already on PATH. Needs root (apt-get), as on CI.
# Usage: bash scripts/install_compose.sh
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
echo "[install_compose] installing the Debian package docker-compose"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "[install_compose] ERROR: docker-compose missing after apt-get install" >&2
  exit 1
fi
echo "[install_compose] ready: $(docker-compose version --short 2>/dev/null || echo docker-compose)"
