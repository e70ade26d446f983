#!/usr/bin/env bash
# Idempotent setup: a project venv in .venv with torch (CPU wheel) first, then auditor[dev].
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

# torch goes first and pinned: a bare 'torch' requirement would pull a multi-GB CUDA build.
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
  echo "[setup] installing torch==$TORCH_VERSION (CPU)"
  "$VPY" -m pip install --quiet "torch==$TORCH_VERSION"
fi

stamp=.venv/.auditor-setup-stamp
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing auditor and its dependencies"
  "$VPY" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $("$VPY" -c 'import torch, transformers, auditor; print("torch", torch.__version__, "transformers", transformers.__version__, "auditor", auditor.__version__)')"
