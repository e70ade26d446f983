#!/usr/bin/env bash
# Idempotent setup: a project venv in .venv with torch (the CPU build unless
# AUDITOR_TORCH_INDEX names another, see scripts/install_torch.sh) first, then auditor[dev].
# Usage: bash scripts/setup.sh        (re-running is cheap: it skips what is already there)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${AUDITOR_TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade "pip>=24" >/dev/null

# torch goes first and pinned, from the PyTorch CPU index when it can be reached: a bare
# 'torch' requirement would pull a multi-GB CUDA build (AUDITOR_TORCH_INDEX picks another
# build, see scripts/install_torch.sh).
AUDITOR_TORCH_VERSION=$TORCH_VERSION bash scripts/install_torch.sh "$VPY"

stamp=.venv/.auditor-setup-stamp
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing auditor and its dependencies"
  "$VPY" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $("$VPY" -c 'import torch, transformers, auditor; print("torch", torch.__version__, "(CUDA " + torch.version.cuda + ")" if torch.version.cuda else "(CPU)", "transformers", transformers.__version__, "auditor", auditor.__version__)')"
