#!/usr/bin/env bash
# The device check of a GPU session: SD v1.4-size random-weight benchmarks in one run (~5 min on
# an H100). Wheels the GPU image lacks travel in .whl/ (diffusers, importlib_metadata):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# Results land in $OUT (or ./benchmarks/out when OUT is unset).
set -o pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)" | tee -a "$OUT/gpu.txt"
quiet() { grep -v "kept in float32"; }
# 1. Paper defaults (T=50, MAX_IT=15, tau2=25), bf16: null-text and direct, fast and reference.
timeout 270 python3 benchmarks/speed.py --size sd14 --device cuda --inversion null_text,direct 2>&1 | quiet | tee "$OUT/sd14_bf16.jsonl"
# 2. UNet FLOPs per phase and per MAG iteration (direct inversion; counting slows the runs).
timeout 200 python3 benchmarks/speed.py --size sd14 --device cuda --inversion direct --flops --no-reedit 2>&1 | quiet | tee "$OUT/sd14_flops.jsonl"
# 3. fp16 (what a T4 would run), fast path only.
timeout 90 python3 benchmarks/speed.py --size sd14 --device cuda --dtype float16 --inversion direct --paths fast 2>&1 | quiet | tee "$OUT/sd14_fp16.jsonl"
