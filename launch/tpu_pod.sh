#!/usr/bin/env bash
# Run on every worker of a Cloud TPU pod slice (the same command on all hosts).
#   launch/tpu_pod.sh my-tpu us-central2-b configs/aishell_large.py:tone /mnt/shared/runs/tone \
#       --config.init=hf:/mnt/models/wav2vec2-large --config.data.dir=/mnt/data/aishell1
# Assumes the repository and its .venv at ~/w2v-jax on every worker (copy them with
# `gcloud compute tpus tpu-vm scp --worker=all`). launch.train sees the TPU chips and calls
# jax.distributed.initialize(), which finds the other workers. The workdir must be shared
# (a mount every worker sees, e.g. gcsfuse or Filestore; paths are plain files, not gs://). A maintenance event's SIGTERM saves a checkpoint;
# running this again resumes.
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG_FILE:ARG WORKDIR [--config.key=value ...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  cd ~/w2v-jax && . .venv/bin/activate &&
  python -m launch.train --config='$config' --workdir='$workdir' --config.model.dtype=bfloat16 $extra"
