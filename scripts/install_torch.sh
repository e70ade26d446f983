#!/usr/bin/env bash
# Idempotent: install torch (pinned) into a Python environment, the CPU build by default.
#
# A plain 'pip install torch' on Linux x86_64 pulls PyPI's CUDA build (several GB of
# nvidia-* wheels). So the PyTorch CPU wheel index is asked first; when it cannot be reached
# within AUDITOR_TORCH_TIMEOUT seconds (an offline mirror, a firewall) or has no such wheel,
# the plain install runs instead and pip's own configuration decides the build (a local
# wheel, a mirror; PyPI's CUDA build on Linux x86_64). The build installed is printed.
#
# Usage: bash scripts/install_torch.sh [PYTHON]        (default: .venv/bin/python)
# Environment:
#   AUDITOR_TORCH_VERSION  the version pinned (default 2.13.0)
#   AUDITOR_TORCH_INDEX    the wheel index asked first (default
#                          https://download.pytorch.org/whl/cpu); for a GPU worker a CUDA
#                          index such as https://download.pytorch.org/whl/cu128, or 'pypi'
#                          for the plain install (PyPI's default build)
#   AUDITOR_TORCH_TIMEOUT  seconds allowed to reach the index (default 5)
set -euo pipefail
VPY=${1:-.venv/bin/python}
VERSION=${AUDITOR_TORCH_VERSION:-2.13.0}
INDEX=${AUDITOR_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
TIMEOUT=${AUDITOR_TORCH_TIMEOUT:-5}

build() {
  "$VPY" -c "import torch; print('torch', torch.__version__, '(CUDA ' + torch.version.cuda + ' build)' if torch.version.cuda else '(CPU build)')"
}

if "$VPY" -c "import sys, torch; sys.exit(0 if torch.__version__.split('+')[0] == '$VERSION' else 1)" 2>/dev/null; then
  echo "[torch] $(build) already installed"
  exit 0
fi

# Can the index be reached at all? (pip would retry for minutes on an unreachable host.)
reachable() {
  "$VPY" - "$1" "$TIMEOUT" <<'PY' 2>/dev/null
import sys
import urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
except Exception:
    sys.exit(1)
PY
}

if [ "$INDEX" != "pypi" ]; then
  if reachable "${INDEX%/}/torch/"; then
    echo "[torch] installing torch==$VERSION from $INDEX"
    if "$VPY" -m pip install --quiet --timeout "$TIMEOUT" --retries 1 --index-url "$INDEX" \
        "torch==$VERSION"; then
      echo "[torch] installed $(build)"
      exit 0
    fi
    echo "[torch] $INDEX has no torch==$VERSION for this platform; using the default index" >&2
  else
    echo "[torch] $INDEX cannot be reached (within ${TIMEOUT} s); installing torch==$VERSION from" \
         "the default index: pip's configuration decides the build (PyPI's is CUDA on Linux x86_64)" >&2
  fi
fi
"$VPY" -m pip install --quiet "torch==$VERSION"
echo "[torch] installed $(build)"
