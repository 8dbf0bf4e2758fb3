r"""Every hidden state at the central frame of every segment of a split, into an embedding store.

  python -m launch.extract --data_dir=/data/tfds --split=test --hf_dir=wav2vec2-large-xlsr-53 --out=emb/pretrained
  python -m launch.extract --corpus_dir=/tmp/synthetic --checkpoint=runs/tone/backbone --out=emb/tone
  python -m launch.extract --corpus_dir=/tmp/synthetic --init=random --out=emb/random

A finished store of the same model and split is reused; an interrupted one resumes.
Multi-host, as launch.train: SLURM and TPU pods are detected; otherwise pass
--coordinator_address, --num_processes and --process_id to every process. Each process
extracts its share of every batch; OUT must be on a filesystem every process sees.
"""

from absl import app, flags

from launch import cli, multihost

flags.DEFINE_string("data_dir", None, "Prepared dataset (launch.prepare_data).")
flags.DEFINE_string("corpus_dir", None, "Or an AISHELL-1-layout corpus read into memory (small corpora).")
flags.DEFINE_string("alignments_dir", None, "TextGrids for --corpus_dir (default CORPUS/alignments).")
flags.DEFINE_string("split", "test", "Split to extract.")
flags.DEFINE_string("out", None, "Store directory to write.", required=True)
flags.DEFINE_string("checkpoint", None, "Our model directory (launch.convert, launch.train).")
flags.DEFINE_string("hf_dir", None, "A Hugging Face checkpoint directory.")
flags.DEFINE_enum("init", None, ["random"], "A random model of --preset instead of a checkpoint.")
flags.DEFINE_string("preset", "tiny", "Preset of a random model.")
flags.DEFINE_integer("batch_size", 8, "Utterances per batch on this process.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Stored embedding dtype.")
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Model compute dtype.")
cli.existing_dirs("data_dir", "corpus_dir", "alignments_dir", "checkpoint", "hf_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax

    from w2v_jax.analysis.extract import extract
    from w2v_jax.checkpoint import load_backbone
    from w2v_jax.data import corpus_split, open_prepared

    sources = [s for s in (FLAGS.checkpoint and f"model:{FLAGS.checkpoint}",
                           FLAGS.hf_dir and f"hf:{FLAGS.hf_dir}", FLAGS.init) if s]
    if len(sources) != 1:
        raise app.UsageError("give exactly one of --checkpoint, --hf_dir, --init=random")
    if bool(FLAGS.data_dir) == bool(FLAGS.corpus_dir):
        raise app.UsageError("give exactly one of --data_dir, --corpus_dir")
    multihost.initialize()
    model = load_backbone(sources[0], preset=FLAGS.preset, dtype=FLAGS.compute_dtype)
    if FLAGS.data_dir:
        data = open_prepared(FLAGS.data_dir, FLAGS.split, model.config)
    else:
        data = corpus_split(FLAGS.corpus_dir, FLAGS.split, model.config,
                            alignments_dir=FLAGS.alignments_dir)
    store = extract(model, data, FLAGS.out, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype,
                    description=sources[0])
    if jax.process_index() == 0:
        print(f"{FLAGS.out}: {len(store)} segments x {store.num_layers} layers ({FLAGS.dtype}), "
              f"{jax.process_count()} process(es)")


if __name__ == "__main__":
    cli.run(main, outputs=["out"])
