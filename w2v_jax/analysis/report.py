"""From embedding stores to per-layer scores, tables, figures and a Markdown report."""

from __future__ import annotations

import csv
import json
import os
from typing import Sequence

import numpy as np
from absl import logging

from w2v_jax.analysis import store as store_lib
from w2v_jax.analysis.bootstrap import bootstrap_layers
from w2v_jax.analysis.cca import pwcca_layers, svcca_layers
from w2v_jax.analysis.checks import one_hot
from w2v_jax.analysis.cka import cka_layers
from w2v_jax.analysis.probes import probe_layers, speaker_split
from w2v_jax.data import labels as L

LABEL_SETS = ("tone", "final", "sex")
METRICS = {"svcca": svcca_layers, "pwcca": pwcca_layers, "cka": cka_layers}
# Layers scored per jit call: bounds host and device memory to about this many bytes.
_CHUNK_BYTES = 2 << 30

Scores = dict[str, dict[str, np.ndarray]]  # label set -> score name -> (num_layers,)


def label_rows(store: store_lib.Store, label_set: str, max_samples: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows that carry `label_set` (a final's tone, every segment's sex...) and their classes
    renumbered 0..C-1 over the classes present, so absent classes add no empty columns."""
    labels = store.table[label_set]
    rows = np.nonzero(labels >= 0)[0]
    if max_samples and len(rows) > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    _, classes = np.unique(labels[rows], return_inverse=True)
    return rows, classes.astype(np.int32)


def score_store(store: store_lib.Store, *, label_sets: Sequence[str] = LABEL_SETS,
                metrics: Sequence[str] = ("svcca",), probes: bool = True, bootstrap: int = 0,
                max_samples: int | None = None, seed: int = 0) -> Scores:
    """Per label set and layer: each metric against the one-hot labels, the probe's held-out
    accuracy and macro-F1, and (bootstrap > 0) a speaker-resampled 95% interval of SVCCA
    with the number of degenerate resamples it leaves out (see `bootstrap_layers`).

    A label set with a single class or too few segments is skipped with a warning; if
    every one is skipped, ValueError says why for each.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {sorted(METRICS)}")
    results: Scores = {}
    skipped: dict[str, str] = {}
    for label_set in label_sets:
        if label_set not in L.TASKS:
            raise ValueError(f"unknown label set {label_set!r}; choose from {L.TASKS}")
        rows, classes = label_rows(store, label_set, max_samples, seed)
        num_classes = int(classes.max(initial=-1)) + 1
        if num_classes < 2:
            skipped[label_set] = f"{num_classes} class(es)"
        elif len(rows) <= store.info["hidden_size"] + num_classes:
            skipped[label_set] = (f"{len(rows)} segments, too few for {store.info['hidden_size']} "
                                  f"dimensions and {num_classes} classes")
        if label_set in skipped:
            logging.warning("%s: %s has %s; not scored", store.directory, label_set,
                            skipped[label_set])
            continue
        speakers = store.table["speaker"][rows]
        split = _probe_split(store, label_set, rows, classes, speakers, seed) if probes else None
        y = one_hot(classes, num_classes)
        chunk = max(1, int(_CHUNK_BYTES // (len(rows) * store.info["hidden_size"] * 4)))
        scores: dict[str, list] = {}
        for start in range(0, store.num_layers, chunk):
            layers = range(start, min(start + chunk, store.num_layers))
            h = np.stack([store.layer(i, rows) for i in layers])
            try:
                for name in metrics:
                    scores.setdefault(name, []).append(np.asarray(METRICS[name](h, y)))
                if split is not None:
                    probe = probe_layers(h, classes, *split, num_classes=num_classes)
                    scores.setdefault("probe_accuracy", []).append(probe["accuracy"])
                    scores.setdefault("probe_macro_f1", []).append(probe["macro_f1"])
                if bootstrap:
                    ci = bootstrap_layers("svcca", h, classes, speakers, num_samples=bootstrap,
                                          seed=seed)
                    scores.setdefault("svcca_low", []).append(ci["low"])
                    scores.setdefault("svcca_high", []).append(ci["high"])
                    scores.setdefault("svcca_degenerate", []).append(ci["degenerate"])
            except ValueError as err:
                # Only now pay a pass over h, to name the layer(s) a NaN or inf is in.
                bad = [store_lib.layer_file(i) for i, x in zip(layers, h)
                       if not np.isfinite(x).all()]
                where = ", ".join(bad) or f"layers {layers.start}-{layers.stop - 1}"
                raise ValueError(f"{store.directory}: label set {label_set!r}, {where}: {err}"
                                 ) from err
        results[label_set] = {k: np.concatenate(v) for k, v in scores.items()}
        results[label_set]["samples"] = np.full(store.num_layers, len(rows))
        results[label_set]["classes"] = np.full(store.num_layers, num_classes)
        logging.info("%s: %s scored on %d segments, %d classes", store.directory, label_set,
                     len(rows), num_classes)
    if not results:
        raise ValueError(f"{store.directory}: no label set could be scored: "
                         + "; ".join(f"{k} has {why}" for k, why in skipped.items()))
    return results


def _probe_split(store: store_lib.Store, label_set: str, rows: np.ndarray, classes: np.ndarray,
                 speakers: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Speaker-disjoint (train, test) masks for the probes, or None (logged) if they cannot
    be trained: one speaker only, or a class no training speaker holds."""
    if len(np.unique(speakers)) < 2:
        logging.warning("%s: %s: one speaker only, so no held-out speakers; no probe",
                        store.directory, label_set)
        return None
    train, test = speaker_split(speakers, test_fraction=0.25, seed=seed)
    missing = np.setdiff1d(np.unique(classes), classes[train])
    if len(missing):
        present = np.unique(store.table[label_set][rows])  # class i of `classes` is present[i]
        names = [L.INVENTORIES[label_set][c] for c in present[missing]]
        logging.warning("%s: %s: classes %s occur only in held-out speakers; no probe",
                        store.directory, label_set, names)
        return None
    return train, test


def write_scores(scores: dict[str, Scores], out_dir: str) -> None:
    """scores.csv (model, label_set, score, layer, value) and scores.json."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "scores.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "label_set", "score", "layer", "value"])
        for model, by_label in scores.items():
            for label_set, by_score in by_label.items():
                for name, values in by_score.items():
                    writer.writerows((model, label_set, name, i, f"{v:.6g}") for i, v in enumerate(values))
    as_lists = {m: {ls: {k: np.asarray(v).tolist() for k, v in d.items()} for ls, d in by.items()}
                for m, by in scores.items()}
    with open(os.path.join(out_dir, "scores.json"), "w") as f:
        json.dump(as_lists, f, indent=1)


def layer_figure(scores: dict[str, Scores], out_dir: str, metric: str = "svcca") -> str:
    """The paper's figure: one panel per model, one line per label set."""
    from w2v_jax.analysis import plots

    curves = {m: {ls: d[metric] for ls, d in by.items() if metric in d} for m, by in scores.items()}
    curves = {m: c for m, c in curves.items() if c}  # a panel per model that has this metric
    bands = {m: {ls: (d["svcca_low"], d["svcca_high"]) for ls, d in by.items() if "svcca_low" in d}
             for m, by in scores.items()} if metric == "svcca" else None
    path = plots.plot_layer_scores(curves, os.path.join(out_dir, f"{metric}_layers"),
                                   intervals=bands, ylabel=metric.upper())[0]
    return os.path.basename(path)


def projection_figures(stores: dict[str, store_lib.Store], out_dir: str, layers: Sequence[int],
                       *, umap: bool = True, max_points: int = 2000, seed: int = 0) -> list[str]:
    """PCA (and UMAP) of chosen layers, coloured by tone (finals only) and by sex."""
    from w2v_jax.analysis import plots

    written = []
    for model, store in stores.items():
        for layer in layers:
            layer = layer % store.num_layers
            for colour in ("tone", "sex"):
                rows, _ = label_rows(store, colour, max_points, seed)
                if len(rows) < 3:
                    continue
                x = store.layer(layer, rows)
                labels = store.table[colour][rows]
                names = {i: n for i, n in enumerate(L.INVENTORIES[colour])}
                for method in ("pca", "umap") if umap else ("pca",):
                    name = f"{method}_{_slug(model)}_layer{layer:02d}_{colour}"
                    path = plots.plot_layer_projection(
                        x, labels, os.path.join(out_dir, name), method=method, seed=seed,
                        label_names=names, title=f"{model}: layer {layer}, {method.upper()} by {colour}")[0]
                    written.append(os.path.basename(path))
    return written


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def score_table(scores: dict[str, Scores], metric: str = "svcca") -> str:
    """Markdown: one row per (model, label set), one column per layer."""
    rows = [[model, label_set, *(f"{v:.2f}" for v in d[metric])]
            for model, by in scores.items() for label_set, d in by.items() if metric in d]
    if not rows:
        raise ValueError(f"no {metric} scores to tabulate for {sorted(scores)}: "
                         "every label set was skipped, or the metric was not computed")
    return markdown_table(["model", "labels", *range(max(len(r) - 2 for r in rows))], rows)


def write_report(scores: dict[str, Scores], stores: dict[str, store_lib.Store], out_dir: str, *,
                 projection_layers: Sequence[int] = (0, -1), umap: bool = True,
                 title: str = "Layer-wise analysis", sections: Sequence[str] = ()) -> str:
    """scores.csv/json, the layer figure, projections and report.md; returns report.md's path."""
    computed = [m for m in METRICS if any(m in d for by in scores.values() for d in by.values())]
    if not computed:
        raise ValueError(f"nothing to report for {sorted(scores)}: no label set was scored")
    write_scores(scores, out_dir)
    parts = [f"# {title}", "", *sections]
    for metric in computed:
        figure = layer_figure(scores, out_dir, metric)
        parts += [f"## {metric.upper()} against the labels, per layer", "",
                  f"![{metric.upper()} per layer]({figure})", "", score_table(scores, metric), ""]
    if any("probe_accuracy" in d for by in scores.values() for d in by.values()):
        parts += ["## Linear probes (held-out speakers), accuracy per layer", "",
                  score_table(scores, "probe_accuracy"), ""]
    projections = projection_figures(stores, out_dir, projection_layers, umap=umap)
    if projections:
        parts += ["## Projections", ""] + [f"![{p}]({p})" for p in projections] + [""]
    parts += ["Stores: " + ", ".join(f"{m} = `{s.directory}`" for m, s in stores.items()), ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
