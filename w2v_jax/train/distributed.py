"""Joining a multi-host run: explicit coordinator flags, or what SLURM / a TPU VM provides."""

from __future__ import annotations

import glob
import os
import sys
import traceback

import jax
from absl import logging


def _on_tpu_vm() -> bool:
    """TPU chips are visible (what jax itself checks): jax then finds the pod's workers itself."""
    return os.path.exists("/dev/accel0") or bool(glob.glob("/dev/vfio/[0-9]*"))


def _in_slurm_job_step() -> bool:
    return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Call before any other JAX call. A single-process run on a GPU box or CPU does nothing."""
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif _in_slurm_job_step() or _on_tpu_vm():
        jax.distributed.initialize()  # jax reads the cluster's environment
    else:
        return
    logging.info("process %d of %d; %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


EXIT_PROCESS_FAILED = 1


def exit_without_peers(error: BaseException) -> None:
    """End this process of a multi-process run now, on an error: one stderr line, exit status 1.

    A process that died takes its collectives with it: the others' next one fails at once, but
    what would follow (the checkpoint manager's final barrier, jax.distributed.shutdown) waits
    for the dead process until the heartbeat timeout, then aborts with a core dump. So no
    cleanup runs: the last finished checkpoint is what a rerun resumes from.
    """
    logging.debug("".join(traceback.format_exception(error)))  # shown with --verbosity=1
    first = (str(error).strip().splitlines() or [""])[0]
    print(f"process {jax.process_index()} of {jax.process_count()}: {type(error).__name__}: "
          f"{first} (stopping without the other processes; rerun all to resume)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_PROCESS_FAILED)
