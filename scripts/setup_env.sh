#!/usr/bin/env bash
# Create the virtual environment and install rnnlab with its dev tools.
#
# Without an NVIDIA GPU, the CPU build of torch is installed first, so that the torch
# range in pyproject.toml is already met (a bare `pip install torch` on Linux pulls a
# CUDA build of several GB). The CPU build comes from the PyTorch CPU index when it is
# reachable, else from pip's configured sources (e.g. a local wheel of torch==2.13.0).
set -euo pipefail
VENV=${1:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
EXTRAS=${EXTRAS:-dev}  # the sweep and slurm extras are opt-in (dev includes them, for the tests)

python3 -m venv "$VENV"
PY="$VENV/bin/python"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: torch (CUDA build) comes with the project's dependencies"
elif "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: torch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
elif "$PY" - "$TORCH_CPU_INDEX" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
PYEOF
then
  echo "setup: no NVIDIA GPU: torch==$TORCH_VERSION CPU build from $TORCH_CPU_INDEX"
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
else
  echo "setup: no NVIDIA GPU, CPU index unreachable: torch==$TORCH_VERSION from pip's configured sources"
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
fi
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
"$PY" -c "import torch, lightning; print('setup: torch', torch.__version__, '| lightning', lightning.__version__)"
