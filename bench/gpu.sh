#!/usr/bin/env bash
# Large (large-lv60) bfloat16 on one GPU: fine-tuning step time, frames/s and MFU, then the
# forward alone. Prepared to finish in under 8 minutes on an H100/H200 (each part has its
# own timeout); run from anywhere:   bench/gpu.sh        (PYTHON=... to pick the interpreter)
# MFU is read against the GPU's bf16 dense peak (bench/timing.PEAK_TFLOPS; --peak_tflops to
# override) with the model FLOPs of w2v_jax.flops.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c "import jax; print('jax', jax.__version__, jax.devices())"

# 8 x 15 s per step (5,992 frames): at most about 44 GB without remat (bench.memory on CPU,
# where XLA keeps bfloat16 activations as float32; less on a GPU, where they stay bfloat16).
timeout 300 "$python" bench/train_step.py --presets=large-lv60 --dtype=bfloat16 --notorch \
  --batch=8 --seconds=15 --repeats=5 || echo "fine-tuning step: failed or timed out (rc $?)"
timeout 120 "$python" bench/forward.py --presets=large-lv60 --dtype=bfloat16 --notorch \
  --batch=8 --seconds=15 --repeats=5 || echo "forward: failed or timed out (rc $?)"
echo "pre-training step: not measured (no pre-training step exists yet)"
