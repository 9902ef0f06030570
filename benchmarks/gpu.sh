#!/usr/bin/env bash
# The device check of a GPU session, in one run (~5 min on an H100): the GPU tests (CUDA graphs
# give the eager numbers), then SD v1.4-size random-weight benchmarks. Wheels the GPU image lacks
# travel in .whl/ (diffusers, importlib_metadata, pytest and its dependencies):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1 \
#     importlib_metadata pytest pluggy iniconfig pygments packaging
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
bench() { timeout "$1" python3 benchmarks/speed.py --size sd14 --device cuda "${@:3}" 2>&1 | quiet | tee "$OUT/$2.jsonl"; }
# 0. GPU tests: CUDA-graph replay equals eager (tiny model on the GPU).
timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -m gpu tests/test_graphs.py 2>&1 | tail -30 | tee "$OUT/gpu_tests.txt"
# 1. Paper defaults (T=50, MAX_IT=15, tau2=25), bf16, fast path with its GPU defaults (CUDA graphs,
#    channels_last).
bench 120 sd14_bf16_fast --inversion null_text,direct --paths fast
# 2. The reference path, for the fast/reference ratio; the fast path without CUDA graphs.
bench 120 sd14_bf16_reference --inversion direct --paths fast,reference --no-reedit
bench 60 sd14_bf16_eager --inversion direct --paths fast --no-cuda-graphs --no-reedit
# 3. fp16 (what a T4 would run), fast path only.
bench 60 sd14_fp16 --dtype float16 --inversion direct --paths fast
# 3b. What the first visitor pays: a fresh process's first edit, and a new photo shape (issue 15).
bench 120 sd14_first_use --inversion direct,null_text --first-use
# 4. Where a null-text step's and a MAG iteration's GPU time goes, channels_last.
timeout 60 python3 benchmarks/unet_calls.py --profile --formats channels_last --backends default 2>&1 | quiet | tee "$OUT/unet_calls.jsonl"
