#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. This is the README's test command and
# exactly what CI runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report test renders HTML in headless Chromium (Debian package; skipped when present).
bash scripts/install_chromium.sh
bash scripts/install_compose.sh  # docker-compose, for tests/queue/test_compose.py (skipped when present)
exec .venv/bin/python -m pytest -q "$@"
