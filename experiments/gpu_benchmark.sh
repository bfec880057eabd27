#!/bin/bash
# One-shot H200 benchmark (experiments/gpu_benchmark.py), for the lent GPU
# machine: python3 there has jax (CUDA), flax, optax, orbax and torch but
# neither tensorflow (not needed) nor ml_collections and tensorboard, carried
# as wheels in .whl/ (`pip download --no-deps -d .whl ml_collections==1.1.0
# tensorboard==2.21.0`). Run from the repo root:
#
#   bash experiments/gpu_benchmark.sh            # figures to $OUT (or ./gpu_benchmark_out)
#   bash experiments/gpu_benchmark.sh --smoke    # the tiny CPU check
#
# The figures go to $OUT/gpu_benchmark.json and the table to stdout. The run
# is planned for about 5.5 minutes; `timeout` stops it after 7 whatever happens
# (the JSON is rewritten after every part, so what finished is kept).
set -u
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
OUT_DIR=${OUT:-gpu_benchmark_out}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    | tee "$OUT_DIR/nvidia_smi.txt"
timeout --signal=INT --kill-after=20 420 python3 -m experiments.gpu_benchmark \
    --out="$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_benchmark.log"
exit "${PIPESTATUS[0]}"
