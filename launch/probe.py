r"""Did pre-training teach the model anything? Linear probes per layer on held-out speakers.

  python -m launch.make_corpus --out=/tmp/probe_corpus --speakers=24 --utterances=40 --seed=0
  python -m launch.probe --model=models/w2v2-small-cmn --corpus_dir=/tmp/probe_corpus --workdir=/tmp/probes

Probes finals, tone and sex at every layer of --model, of the same architecture at random init
(--init_seed) and of log-mel at the same frames; writes WORKDIR/probes.{json,md,png} and prints
whether the model's best layer beats both clearly on finals and tone (docs/probes.md). The
corpus must hold speakers the model was not pre-trained on. Embedding stores under
WORKDIR/embeddings are reused by a rerun.
"""

import os

from absl import flags

from launch import cli

flags.DEFINE_string("model", None, "Model directory: ours (launch.pretrain's model/, launch.convert) "
                    "or a Hugging Face checkpoint.", required=True)
flags.DEFINE_string("corpus_dir", None, "AISHELL-1-layout corpus with alignments (launch.make_corpus).",
                    required=True)
flags.DEFINE_string("workdir", None, "Where the stores and probes.{json,md,png} go.", required=True)
flags.DEFINE_list("splits", ["train", "dev", "test"], "Corpus splits to pool (the probe splits "
                  "speakers itself).")
flags.DEFINE_float("test_fraction", 0.5, "Share of each sex's speakers held out for testing.")
flags.DEFINE_integer("init_seed", 0, "Seed of the random-init model.")
flags.DEFINE_integer("seed", 0, "Seed of the speaker split and the bootstrap.")
flags.DEFINE_integer("bootstrap", 1000, "Speaker resamples for the intervals.")
flags.DEFINE_integer("batch_size", 8, "Utterances per extraction batch.")
cli.existing_dirs("model", "corpus_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax.analysis import layer_probes
    from w2v_jax.checkpoint import PARAMS_DIR, load_backbone

    ours = os.path.isdir(os.path.join(FLAGS.model, PARAMS_DIR))
    model = load_backbone(f"{'model' if ours else 'hf'}:{FLAGS.model}")
    result = layer_probes.run(model, FLAGS.corpus_dir, FLAGS.workdir, model_name=FLAGS.model,
                              splits=FLAGS.splits, init_seed=FLAGS.init_seed,
                              test_fraction=FLAGS.test_fraction, seed=FLAGS.seed,
                              num_samples=FLAGS.bootstrap, batch_size=FLAGS.batch_size)
    print(layer_probes.summary_text(result))
    print(f"wrote {os.path.join(FLAGS.workdir, 'probes.{json,md,png}')}")


if __name__ == "__main__":
    cli.run(main, outputs=["workdir"])
