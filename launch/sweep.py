r"""How the paper's headline claim depends on fine-tuning length, depth and learning rate.

  python -m launch.sweep --config=configs/headline_sweep.py:cpu --workdir=/tmp/w2v-jax/sweep
  python -m launch.sweep --config=configs/headline_sweep.py --workdir=runs/sweep

Fine-tunes the shipped model for tone at each point of a one-factor-at-a-time sweep
(configs/headline_sweep.py), runs the experiment's analysis at each, and writes
WORKDIR/sweep.md, sweep.json and sweep.png. Rerunning resumes.
"""

from absl import flags

from launch import cli

cli.define_config("configs/headline_sweep.py:cpu", "Sweep config: configs/headline_sweep.py[:cpu].")
flags.DEFINE_string("workdir", None, "Sweep directory.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax.experiment import sweep

    rows = sweep.run(FLAGS.config, FLAGS.workdir, say=print)
    print(sweep.report_text(rows))
    print(f"Sweep: {FLAGS.workdir}/sweep.md")


if __name__ == "__main__":
    cli.run(main, outputs=["workdir"])
