r"""Score every layer of one or more embedding stores and write the report.

  python -m launch.analyze --embeddings=emb/pretrained --embeddings=emb/tone --out=report
  python -m launch.analyze --embeddings=emb/tone --names=tone --metrics=svcca,pwcca,cka --bootstrap=200

Writes OUT/scores.csv, scores.json, svcca_layers.png/.svg (one panel per model, one line
per label set), PCA/UMAP scatters of the chosen layers, and OUT/report.md embedding them.
"""

from absl import app, flags

from launch import cli

flags.DEFINE_multi_string("embeddings", None, "Store directories (launch.extract).", required=True)
flags.DEFINE_list("names", None, "A name per store (default: the directory names).")
flags.DEFINE_string("out", None, "Report directory.", required=True)
flags.DEFINE_list("label_sets", ["tone", "final", "sex"], "Labels to score against.")
flags.DEFINE_list("metrics", ["svcca"], "Any of svcca, pwcca, cka.")
flags.DEFINE_bool("probes", True, "Also train a linear probe per layer (held-out speakers).")
flags.DEFINE_integer("bootstrap", 0, "Speaker-bootstrap resamples for SVCCA intervals (0: none).")
flags.DEFINE_integer("max_samples", None, "Score a seeded random subset of at most this many segments.")
flags.DEFINE_list("projection_layers", ["0", "-1"], "Layers drawn with PCA/UMAP (negative: from the top).")
flags.DEFINE_bool("umap", True, "Draw UMAP besides PCA.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import os

    from w2v_jax.analysis.report import score_store, write_report
    from w2v_jax.analysis.store import Store

    names = FLAGS.names or [os.path.basename(os.path.normpath(d)) for d in FLAGS.embeddings]
    if len(names) != len(FLAGS.embeddings) or len(set(names)) != len(names):
        raise app.UsageError("--names needs one distinct name per --embeddings")
    stores = {name: Store(d) for name, d in zip(names, FLAGS.embeddings)}
    scores = {name: score_store(store, label_sets=FLAGS.label_sets, metrics=FLAGS.metrics,
                                probes=FLAGS.probes, bootstrap=FLAGS.bootstrap,
                                max_samples=FLAGS.max_samples)
              for name, store in stores.items()}
    path = write_report(scores, stores, FLAGS.out, umap=FLAGS.umap,
                        projection_layers=[int(i) for i in FLAGS.projection_layers])
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main, outputs=["out"])
