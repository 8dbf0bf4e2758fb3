#!/usr/bin/env bash
# Train on the GPUs of one host (one process sees them all; the batch is split over them).
#   launch/gpu.sh configs/aishell_large.py:tone+sex runs/tone_sex --config.init=hf:models/wav2vec2-large
# Extra arguments are passed to launch.train (any --config.section.key=value).
# Pick GPUs with CUDA_VISIBLE_DEVICES=0,1; rerun the same command to resume.
set -euo pipefail
config=${1:?usage: launch/gpu.sh CONFIG_FILE:ARG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: launch/gpu.sh CONFIG_FILE:ARG WORKDIR [--config.key=value ...]}
shift 2
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m launch.train --config="$config" --workdir="$workdir" \
  --config.model.dtype=bfloat16 "$@"
