#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. This is the README's test command and
# exactly what CI runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two Debian packages, installed with apt-get when missing (root or sudo without a password):
# headless Chromium renders the report's HTML, docker-compose validates docker-compose.yml.
# Where apt-get cannot run, each script says so and the tests that need them are skipped.
bash scripts/install_chromium.sh
bash scripts/install_compose.sh
exec .venv/bin/python -m pytest -q "$@"
