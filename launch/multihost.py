"""The multi-host flags of every entry point that runs on all processes, and joining the run.

SLURM and TPU pods are detected; elsewhere every process gets --coordinator_address,
--num_processes and --process_id. Importing this module defines the flags.
"""

from absl import flags

flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host, no SLURM/TPU).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
FLAGS = flags.FLAGS


def initialize() -> None:
    """Join the run the flags or the cluster describe; a single process does nothing."""
    from w2v_jax.train import distributed

    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
