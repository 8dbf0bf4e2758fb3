"""Did pre-training teach the model anything? Linear probes per layer on held-out speakers.

For a model, the same architecture at random init (seeded) and 80-band log-mel at the same
central frames, one logistic-regression probe per layer and task (`probes.probe_layers`) is
trained on some speakers and scored on the others (split within each sex, so both sexes sit
on both sides). Accuracy gets a speaker-bootstrap interval (`bootstrap.rate_bootstrap`) over
the held-out speakers; every source and chance (the training majority class) is resampled
with the same speaker draws, so differences between sources pair resample by resample.

"Clearly better" (CLEARLY): the pre-trained model's best layer's 95% interval lies wholly
above the other source's best layer's (disjoint intervals). The paired difference, over the
same speaker resamples, is reported with its own interval as the size of the gap. Best
layers are chosen by held-out accuracy, for every source alike.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from absl import logging
from flax import nnx

from w2v_jax.analysis import bootstrap, plots
from w2v_jax.analysis.baselines import log_mel_at_frames
from w2v_jax.analysis.extract import extract
from w2v_jax.analysis.probes import probe_layers, speaker_split
from w2v_jax.analysis.report import markdown_table
from w2v_jax.data.errors import DataError
from w2v_jax.data import aishell
from w2v_jax.data.sources import from_examples
from w2v_jax.files import write_json
from w2v_jax.models import Wav2Vec2Model

TASKS = ("final", "tone", "sex")
MUST_BEAT_ON = ("final", "tone")  # sex is reported, not required: pitch alone carries much of it
SUBJECT = "pretrained"
SOURCES = (SUBJECT, "random_init", "log_mel")
NAMES = {"pretrained": "pretrained",  # the plot draws "pretrained" in black
          "random_init": "random init", "log_mel": "log-mel"}
CLEARLY = ("the pre-trained model's best layer's interval lies wholly above the other "
           "source's best layer's (disjoint intervals)")


def score_sources(features: dict[str, np.ndarray], labels: np.ndarray, speakers: np.ndarray,
                  train: np.ndarray, test: np.ndarray, *, subject: str = SUBJECT,
                  num_samples: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """One task: every source's per-layer held-out accuracy, chance, and subject vs the rest.

    Args:
      features: source name -> (L, N, D) features (L may differ between sources);
      labels: (N,) classes 0..C-1 (no ignore label); speakers: (N,) speaker ids;
      train, test: (N,) speaker-disjoint boolean masks (`probes.speaker_split`).
      subject: the source compared with every other one.

    Returns:
      {"classes", "segments": {"train", "test"},
       "chance": {"accuracy", "low", "high"} (always guessing the training majority class),
       "sources": {name: {"accuracy", "low", "high", "macro_f1": (L,) lists, "best_layer"}},
       "versus": {other: {"difference", "low", "high" (paired over resamples), "layers"
                  (both best layers), "clearly_better" (CLEARLY)}}}.

    Raises:
      bootstrap.TooFewSpeakers: fewer than 5 held-out speakers.
    """
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1
    ids, which = np.unique(speakers[test], return_inverse=True)
    totals = np.bincount(which, minlength=len(ids))

    def by_speaker(correct: np.ndarray) -> np.ndarray:  # (N,) -> (G,) hits per test speaker
        return np.bincount(which, weights=np.asarray(correct, float)[test], minlength=len(ids))

    probes = {}
    for width in dict.fromkeys(h.shape[2] for h in features.values()):
        # Sources of one width train in one call: one compilation, not one per source.
        names = [n for n, h in features.items() if h.shape[2] == width]
        probe = probe_layers(np.concatenate([features[n] for n in names]), labels, train, test,
                             num_classes=num_classes)
        ends = np.cumsum([len(features[n]) for n in names])
        for name, end in zip(names, ends):
            probes[name] = {k: probe[k][end - len(features[name]):end]
                            for k in ("correct", "macro_f1")}
    majority = np.bincount(labels[train], minlength=num_classes).argmax()
    columns, spans = [by_speaker(labels == majority)], {}
    for name in features:
        spans[name] = slice(len(columns), len(columns) + len(features[name]))
        columns += [by_speaker(correct) for correct in probes[name]["correct"]]
    # One draw of speakers for every column: chance, each source's layers.
    rate = bootstrap.rate_bootstrap(np.stack(columns, 1), totals, num_samples=num_samples,
                                    seed=seed, ci=ci)
    sources = {}
    for name, span in spans.items():
        point = rate["point"][span]
        sources[name] = {"accuracy": point.tolist(), "low": rate["low"][span].tolist(),
                         "high": rate["high"][span].tolist(), "macro_f1": probes[name]["macro_f1"].tolist(),
                         "best_layer": int(np.argmax(point))}
    best = {name: spans[name].start + sources[name]["best_layer"] for name in spans}
    versus = {}
    for other in (n for n in spans if n != subject):
        samples = rate["samples"][:, best[subject]] - rate["samples"][:, best[other]]
        point = rate["point"][best[subject]] - rate["point"][best[other]]
        low, high = bootstrap.interval(point, samples, ci)
        clearly = rate["low"][best[subject]] > rate["high"][best[other]]
        versus[other] = {"difference": float(point), "low": float(low), "high": float(high),
                         "clearly_better": bool(clearly),
                         "layers": [sources[subject]["best_layer"], sources[other]["best_layer"]]}
    return {"classes": num_classes,
            "segments": {"train": int(train.sum()), "test": int(test.sum())},
            "chance": {"accuracy": float(rate["point"][0]), "low": float(rate["low"][0]),
                       "high": float(rate["high"][0])},
            "sources": sources, "versus": versus}


def load_features(model: Wav2Vec2Model, corpus_dir: str, workdir: str, *,
                  splits: Sequence[str], init_seed: int = 0, batch_size: int = 8
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(features, table) over the corpus's splits pooled: features[source] (L, N, D) for the
    model, the same architecture at random init (nnx.Rngs(init_seed)) and log-mel (1, N, 80),
    all at the central frame of every labelled segment; table the store's segment columns.
    Embedding stores go to WORKDIR/embeddings/SOURCE (a rerun reuses them). The splits are
    pooled into one extraction, so each batch shape compiles once."""
    cfg = model.config
    corpus = aishell.Corpus(corpus_dir)
    examples = [e for split in splits for e in aishell.load_split(corpus, split, cfg)]
    if not examples:
        raise DataError(f"{corpus_dir}: no labelled utterance in splits {list(splits)}")
    data = from_examples(examples, "+".join(splits), cfg)
    models = {SUBJECT: model, "random_init": Wav2Vec2Model(cfg, rngs=nnx.Rngs(init_seed))}
    stores = {name: extract(m, data, os.path.join(workdir, "embeddings", name),
                            batch_size=batch_size, description=name)
              for name, m in models.items()}
    table = stores[SUBJECT].table
    features = {name: store.layers() for name, store in stores.items()}
    features["log_mel"] = log_mel_at_frames(data.source, table, frame_stride=cfg.frame_stride,
                                            receptive_field=cfg.receptive_field)[None]
    return features, table


def probe_sources(features: dict[str, np.ndarray], table: dict[str, np.ndarray], *,
                  test_fraction: float = 0.5, seed: int = 0, num_samples: int = 1000,
                  ci: float = 0.95) -> dict:
    """Every task of TASKS scored by `score_sources` on one speaker split (drawn within each
    sex); returns {"speakers": {"train", "test"}, "tasks": {task: score_sources(...)}}."""
    speakers = np.asarray(table["speaker"])
    if len(np.unique(table["sex"][table["sex"] >= 0])) < 2:
        raise DataError("the corpus holds speakers of one sex only: a sex probe needs both")
    try:
        train, test = speaker_split(speakers, test_fraction=test_fraction, seed=seed,
                                    strata=table["sex"])
    except ValueError as err:
        raise DataError(f"no speaker split with both sexes on both sides: {err}") from err
    tasks = {}
    for task in TASKS:
        rows = np.nonzero(table[task] >= 0)[0]
        _, classes = np.unique(table[task][rows], return_inverse=True)
        try:
            tasks[task] = score_sources({k: v[:, rows] for k, v in features.items()},
                                        classes.astype(np.int32), speakers[rows], train[rows],
                                        test[rows], num_samples=num_samples, seed=seed, ci=ci)
        except bootstrap.TooFewSpeakers as err:
            raise DataError(f"{task}: {err} held out; use more speakers or a larger "
                            "test fraction") from err
        logging.info("%s: %d segments, %d classes", task, len(rows), tasks[task]["classes"])
    return {"speakers": {"train": sorted(set(speakers[train])), "test": sorted(set(speakers[test]))},
            "tasks": tasks}


def beats_clearly(result: dict) -> bool:
    """Whether the subject beats every other source clearly on every task of MUST_BEAT_ON."""
    return all(v["clearly_better"] for task in MUST_BEAT_ON
               for v in result["tasks"][task]["versus"].values())


def _interval(d: dict, key: str = "accuracy", i: int | None = None) -> str:
    pick = (lambda k: d[k]) if i is None else (lambda k: d[k][i])
    return f"{pick(key):.3f} [{pick('low'):.3f}, {pick('high'):.3f}]"


def summary_rows(result: dict) -> list[list[str]]:
    """Per task: chance, each source's best layer with its interval, the subject's margins."""
    rows = []
    for task, t in result["tasks"].items():
        row = [task, _interval(t["chance"])]
        for name, s in t["sources"].items():
            layer = s["best_layer"]
            where = f" (layer {layer})" if len(s["accuracy"]) > 1 else ""
            row.append(_interval(s, i=layer) + where)
        row += [f"{_interval(v, 'difference')}{' clearly' if v['clearly_better'] else ''}"
                for v in t["versus"].values()]
        rows.append(row)
    return rows


def summary_header(result: dict) -> list[str]:
    t = next(iter(result["tasks"].values()))
    return (["task", "chance"] + [NAMES.get(n, n) for n in t["sources"]]
            + [f"vs {NAMES.get(n, n)}" for n in t["versus"]])


def layer_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The layer-wise profile: one row per layer, a column per task and layered source."""
    layered = [(task, name) for task, t in result["tasks"].items()
               for name, s in t["sources"].items() if len(s["accuracy"]) > 1]
    depth = max(len(result["tasks"][task]["sources"][name]["accuracy"]) for task, name in layered)
    header = ["layer"] + [f"{task}: {NAMES.get(name, name)}" for task, name in layered]
    rows = [[str(i)] + [_interval(result["tasks"][task]["sources"][name], i=i)
                        for task, name in layered] for i in range(depth)]
    return header, rows


def write_outputs(result: dict, out_dir: str) -> list[str]:
    """probes.json (everything), probes.md (tables), probes.png/.svg (accuracy vs layer)."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "probes.json"), result)
    header, rows = layer_rows(result)
    ci = f"{result['ci']:.0%}"
    text = "\n".join([
        f"# Linear probes: {result['model']}", "",
        f"Held-out accuracy with {ci} speaker-bootstrap intervals over "
        f"{len(result['speakers']['test'])} test speakers (probes trained on "
        f"{len(result['speakers']['train'])} others). Chance: always the training majority class. "
        f"\"clearly\": {CLEARLY}.", "",
        markdown_table(summary_header(result), summary_rows(result)), "",
        "## Layer-wise profile", "", markdown_table(header, rows), "",
        f"Pre-trained model beats random init and log-mel clearly on "
        f"{' and '.join(MUST_BEAT_ON)}: {'yes' if beats_clearly(result) else 'no'}.", ""])
    with open(os.path.join(out_dir, "probes.md"), "w") as f:
        f.write(text)
    tasks = result["tasks"]
    curves = {task: {NAMES[n]: np.asarray(s["accuracy"]) for n, s in t["sources"].items()
                     if len(s["accuracy"]) > 1} for task, t in tasks.items()}
    bands = {task: {NAMES[n]: (np.asarray(s["low"]), np.asarray(s["high"]))
                    for n, s in t["sources"].items() if len(s["accuracy"]) > 1}
             for task, t in tasks.items()}
    depth = {task: max(len(c) for c in by.values()) for task, by in curves.items()}
    chance = {task: (np.full(depth[task], t["chance"]["low"]), np.full(depth[task], t["chance"]["high"]))
              for task, t in tasks.items()}
    reference = {task: t["sources"]["log_mel"]["accuracy"][0] for task, t in tasks.items()
                 if "log_mel" in t["sources"]}
    plots.plot_layer_panels(curves, os.path.join(out_dir, "probes.png"), intervals=bands,
                            chance=chance, reference=reference, reference_name="log-mel",
                            chance_name="chance (majority class)", ylabel="probe accuracy")
    return [os.path.join(out_dir, f) for f in ("probes.json", "probes.md", "probes.png")]


def summary_text(result: dict) -> str:
    """The best-layer table and the verdict, for a terminal."""
    return "\n".join([markdown_table(summary_header(result), summary_rows(result)), "",
                      f"clearly = {CLEARLY}",
                      f"pre-trained beats random init and log-mel clearly on "
                      f"{' and '.join(MUST_BEAT_ON)}: {'yes' if beats_clearly(result) else 'no'}"])


def run(model: Wav2Vec2Model, corpus_dir: str, workdir: str, *, model_name: str,
        splits: Sequence[str] = ("train", "dev", "test"), init_seed: int = 0,
        test_fraction: float = 0.5, seed: int = 0, num_samples: int = 1000, ci: float = 0.95,
        batch_size: int = 8) -> dict:
    """Extract, probe, write WORKDIR/probes.{json,md,png}; returns the result."""
    features, table = load_features(model, corpus_dir, workdir, splits=splits,
                                    init_seed=init_seed, batch_size=batch_size)
    result = {"model": model_name, "corpus": os.path.abspath(corpus_dir), "splits": list(splits),
              "init_seed": init_seed, "seed": seed, "test_fraction": test_fraction,
              "num_samples": num_samples, "ci": ci, "clearly": CLEARLY,
              **probe_sources(features, table, test_fraction=test_fraction, seed=seed,
                              num_samples=num_samples, ci=ci)}
    write_outputs(result, workdir)
    return result
