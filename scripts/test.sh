#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. This is the README's test command and
# exactly what CI runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
