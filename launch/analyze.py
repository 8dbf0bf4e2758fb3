r"""Score every layer of one or more embedding stores and write the report.

  python -m launch.analyze --embeddings=emb/pretrained --embeddings=emb/tone --out=report
  python -m launch.analyze --embeddings=emb/tone --names=tone --metrics=svcca,pwcca,cka --bootstrap=200

Writes OUT/scores.csv, scores.json, svcca_layers.png/.svg and probe_layers.png/.svg (one
panel per label set, one curve per model, speaker-bootstrap bands, the chance band),
PCA/UMAP scatters of the chosen layers, and OUT/report.md embedding them. With a store
named "pretrained" (--names), also the layer-to-layer SVCCA of every other store against
it and OUT/claims.json: the paper's claims about the stores given, with verdicts
(accuracy claims stay undecided: they need the fine-tuning's per-speaker test accuracy).
"""

from absl import app, flags

from launch import cli

flags.DEFINE_multi_string("embeddings", None, "Store directories (launch.extract).", required=True)
flags.DEFINE_list("names", None, "A name per store (default: the directory names).")
flags.DEFINE_string("out", None, "Report directory.", required=True)
flags.DEFINE_list("label_sets", ["tone", "final", "sex"], "Labels to score against.")
flags.DEFINE_list("metrics", ["svcca"], "Any of svcca, pwcca, cka.")
flags.DEFINE_bool("probes", True, "Also train a linear probe per layer (held-out speakers).")
flags.DEFINE_integer("bootstrap", 200, "Speaker-bootstrap resamples for SVCCA intervals (0: none).")
flags.DEFINE_bool("floors", True, "Score random features and permuted labels (the chance band).")
flags.DEFINE_float("top_fraction", 1 / 3, "The paper's 'top layers': this share of the layers.")
flags.DEFINE_float("keep_fraction", 0.9, "A multi-task model keeps a label above this share of the "
                   "mono-task top-layer SVCCA.")
flags.DEFINE_integer("max_samples", None, "Score a seeded random subset of at most this many segments.")
flags.DEFINE_list("projection_layers", ["0", "-1"], "Layers drawn with PCA/UMAP (negative: from the top).")
flags.DEFINE_bool("umap", True, "Draw UMAP besides PCA.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import os

    from w2v_jax.analysis.claims import PRETRAINED, check_claims
    from w2v_jax.analysis.report import layer_similarity, score_store, write_report
    from w2v_jax.analysis.store import Store
    from w2v_jax.files import write_json

    names = FLAGS.names or [os.path.basename(os.path.normpath(d)) for d in FLAGS.embeddings]
    if len(names) != len(FLAGS.embeddings) or len(set(names)) != len(names):
        raise app.UsageError("--names needs one distinct name per --embeddings")
    stores = {name: Store(d) for name, d in zip(names, FLAGS.embeddings)}
    scores = {name: score_store(store, label_sets=FLAGS.label_sets, metrics=FLAGS.metrics,
                                probes=FLAGS.probes, bootstrap=FLAGS.bootstrap,
                                max_samples=FLAGS.max_samples, floors=FLAGS.floors)
              for name, store in stores.items()}
    claims = similarity = None
    if PRETRAINED in stores:
        tuned = [name for name in stores if name != PRETRAINED]
        similarity = {}
        for name in tuned:
            try:
                similarity[name] = layer_similarity(stores[PRETRAINED], stores[name],
                                                    max_samples=FLAGS.max_samples)
            except ValueError as err:  # different segments, or too few: the rest still reports
                print(f"no layer-to-layer curve for {name}: {err}")
        claims = check_claims(scores, {}, top_fraction=FLAGS.top_fraction,
                              keep_fraction=FLAGS.keep_fraction, same_accuracy_margin=0.02,
                              fine_tunings=tuned, num_samples=FLAGS.bootstrap)
        os.makedirs(FLAGS.out, exist_ok=True)
        write_json(os.path.join(FLAGS.out, "claims.json"), claims)
    path = write_report(scores, stores, FLAGS.out, claims=claims, similarity=similarity or None,
                        umap=FLAGS.umap, projection_layers=[int(i) for i in FLAGS.projection_layers])
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main, outputs=["out"])
