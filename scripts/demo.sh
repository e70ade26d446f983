#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the bundled sample, offline.
#
# Until the embedded default model + SAE land (issue 4), this builds a tiny *random* model and
# a random TopK SAE on the spot (seconds, no download), so the whole path runs end to end:
# the features it writes carry no meaning. Output: out/demo/features (a feature store).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
demo=out/demo
mkdir -p "$demo"
if [ ! -f "$demo/model/config.json" ] || [ ! -f "$demo/sae/config.json" ]; then
  echo "[demo] building a tiny random model and SAE in $demo (no real weights yet)"
  .venv/bin/python - "$demo" <<'PY'
import sys
from pathlib import Path

from auditor.testing import make_random_sae, make_tiny_model

root = Path(sys.argv[1])
make_tiny_model(root / "model", arch="gemma3", n_layers=4, d_model=64, max_positions=512)
make_random_sae(d_in=64, d_sae=1024, k=32, layer=2).save(root / "sae")
PY
fi
.venv/bin/auditor extract samples/sample.jsonl --model "$demo/model" --sae "$demo/sae" \
  --id-column id --keep genre --pool max --pool mean --max-length 128 \
  --out "$demo/features" --overwrite
.venv/bin/python - "$demo/features" <<'PY'
import sys

from auditor.store import read_features

fm = read_features(sys.argv[1], pooling="max", columns=["genre"])
nnz = fm.X.getnnz(axis=1)
print(f"[demo] feature matrix {fm.X.shape[0]} documents x {fm.X.shape[1]} features, "
      f"{nnz.mean():.1f} active per document (min {nnz.min()}, max {nnz.max()})")
print(f"[demo] provenance: model {fm.metadata['model']['id']}, "
      f"SAE sha256 {fm.metadata['saes']['layer2']['sha256'][:12]}…, "
      f"input {fm.metadata['input']['fingerprint'][:19]}…")
PY
