r"""The paper's experiment in one command: fine-tunings, extraction, SVCCA, report.

  python -m launch.experiment --config=configs/paper.py:demo --workdir=/tmp/w2v-jax/demo
  python -m launch.experiment --config=configs/paper.py:demo --workdir=W --config.train.data.dir=DIR
  python -m launch.experiment --config=configs/paper.py --workdir=runs/paper \
      --config.train.init=hf:models/wav2vec2-large --config.train.data.dir=data/aishell1

The demo preset generates its eSpeak corpus under WORKDIR/corpus unless
config.train.data.dir names a corpus in the AISHELL-1 layout. Stages recorded as finished in
WORKDIR/manifest.json are skipped: rerun the same command to resume.
"""

from absl import flags

from launch import cli

cli.define_config("configs/paper.py", "configs/paper.py[:demo]")
flags.DEFINE_string("workdir", None, "Experiment directory.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax import experiment

    experiment.run_and_print(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main, outputs=["workdir"])
