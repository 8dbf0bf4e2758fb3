r"""The built-in default: the paper's grid on generated eSpeak NG Mandarin speech.

  python -m launch.demo                      # about 10 minutes on 2 CPU cores
  python -m launch.demo --workdir=/tmp/w2v-jax/demo400 --config.train.total_steps=400

Generates a 40-speaker Mandarin corpus with eSpeak NG (exact phone alignments from the
synthesiser), fine-tunes the shipped self-supervised model (models/w2v2-small-cmn) five
times (tone, finals, sex, tone+sex, finals+sex; the heads alone, then all but the CNN),
extracts every layer at the central frame of each phone, scores each layer with SVCCA and
writes WORKDIR/report/report.md. Rerunning resumes.
"""

from absl import flags

from launch import cli

cli.define_config("configs/paper.py:demo", "Experiment config.")
flags.DEFINE_string("workdir", "/tmp/w2v-jax/demo", "Where the corpus, runs, embeddings and report go.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax import experiment

    experiment.run_and_print(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    cli.run(main, outputs=["workdir"])
