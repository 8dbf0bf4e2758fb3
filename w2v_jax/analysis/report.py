"""From embedding stores to per-layer scores, tables, figures and a Markdown report."""

from __future__ import annotations

import csv
import io
import os
from typing import Sequence

import numpy as np
from absl import logging

from w2v_jax import files
from w2v_jax.analysis import store as store_lib
from w2v_jax.analysis import baselines
from w2v_jax.analysis.bootstrap import TooFewSpeakers, bootstrap_layers, rate_bootstrap
from w2v_jax.analysis.cca import pwcca_layers, svcca, svcca_layers
from w2v_jax.analysis.cka import cka_layers
from w2v_jax.analysis.probes import probe_layers, speaker_split
from w2v_jax.data import labels as L

LABEL_SETS = ("tone", "final", "sex")
METRICS = {"svcca": svcca_layers, "pwcca": pwcca_layers, "cka": cka_layers}
# Layers scored per jit call: bounds host and device memory to about this many bytes.
_CHUNK_BYTES = 2 << 30

Scores = dict[str, dict[str, np.ndarray | str]]  # label set -> score name -> values (see score_store)


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
                metrics: Sequence[str] = ("svcca",), probes: bool = True, bootstrap: int = 200,
                max_samples: int | None = None, seed: int = 0, floors: bool = True,
                log_mel: np.ndarray | None = None) -> Scores:
    """Per label set, layer by layer: each metric against the one-hot labels, the probe's
    held-out accuracy and macro-F1, a speaker bootstrap of SVCCA, chance floors and the
    log-mel reference.

    Returns scores[label_set], a dict of numpy arrays ((L,) unless said):
      <metric>, probe_accuracy, probe_macro_f1, samples, classes;
      probe_accuracy_low, probe_accuracy_high: its interval over resamples of the
        probe's held-out speakers (`bootstrap.rate_bootstrap`);
      svcca_low, svcca_high, svcca_degenerate: the 95% basic bootstrap interval over
        `bootstrap` speaker resamples (`bootstrap_layers`); svcca_samples (B, L) and
        speakers (G,) for paired claim statistics (`claims.check_claims`);
      svcca_random (draws,), svcca_permuted, probe_random (draws,), probe_permuted:
        chance floors (`baselines`), when `floors`;
      svcca_logmel, probe_logmel (): the log-mel reference, when `log_mel` (N, 80) is
        given (rows aligned with the store, e.g. `baselines.log_mel_at_frames`);
    and, as text, why a part is missing: interval_reason (no bootstrap interval, e.g.
    too few speakers), probe_reason (no probe), probe_interval_reason. A label set that cannot be scored (a
    single class, fewer segments than dimensions) is {"skipped": reason}; if none can
    be, ValueError says why for each.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {sorted(METRICS)}")
    if log_mel is not None and len(log_mel) != len(store):
        raise ValueError(f"log_mel has {len(log_mel)} rows but {store.directory} has "
                         f"{len(store)} segments")
    results: Scores = {}
    for label_set in label_sets:
        if label_set not in L.TASKS:
            raise ValueError(f"unknown label set {label_set!r}; choose from {L.TASKS}")
        rows, classes = label_rows(store, label_set, max_samples, seed)
        num_classes = int(classes.max(initial=-1)) + 1
        if num_classes < 2:
            results[label_set] = {"skipped": f"{num_classes} class(es) in the split"}
        elif len(rows) <= store.info["hidden_size"] + num_classes:
            results[label_set] = {"skipped": f"{len(rows)} segments, too few for "
                                             f"{store.info['hidden_size']} dimensions and "
                                             f"{num_classes} classes"}
        if label_set in results:
            logging.warning("%s: %s not scored: %s", store.directory, label_set,
                            results[label_set]["skipped"])
            continue
        speakers = store.table["speaker"][rows]
        split, probe_reason = (_probe_split(store, label_set, rows, classes, speakers, seed)
                               if probes else (None, ""))
        chunk = max(1, int(_CHUNK_BYTES // (len(rows) * store.info["hidden_size"] * 4)))
        scores: dict[str, list] = {}
        interval_reason = ""  # why a bootstrap that was asked for gave no interval
        for start in range(0, store.num_layers, chunk):
            layers = range(start, min(start + chunk, store.num_layers))
            h = np.stack([store.layer(i, rows) for i in layers])
            try:
                for name in metrics:
                    scores.setdefault(name, []).append(np.asarray(METRICS[name](h, classes)))
                if split is not None:
                    probe = probe_layers(h, classes, *split, num_classes=num_classes)
                    scores.setdefault("probe_accuracy", []).append(probe["accuracy"])
                    scores.setdefault("probe_macro_f1", []).append(probe["macro_f1"])
                    scores.setdefault("probe_correct", []).append(probe["correct"])
                if floors:
                    for k, v in baselines.svcca_floors(h, classes, seed=seed).items():
                        scores.setdefault(k, []).append(v)
                    if split is not None:
                        for k, v in baselines.probe_floors(h, classes, *split, num_classes=num_classes,
                                                           seed=seed).items():
                            scores.setdefault(k, []).append(v)
                if bootstrap and not interval_reason:
                    try:
                        ci = bootstrap_layers("svcca", h, classes, speakers,
                                              num_samples=bootstrap, seed=seed)
                    except TooFewSpeakers as err:
                        interval_reason = str(err)
                        logging.warning("%s: %s: no interval: %s", store.directory, label_set, err)
                    else:
                        for k in ("low", "high", "degenerate"):
                            scores.setdefault(f"svcca_{k}", []).append(ci[k])
                        scores.setdefault("svcca_samples", []).append(ci["samples"])
                        scores["speakers"] = [ci["groups"]]
            except ValueError as err:
                # Only now pay a pass over h, to name the layer(s) a NaN or inf is in.
                bad = [store_lib.layer_file(i) for i, x in zip(layers, h)
                       if not np.isfinite(x).all()]
                where = ", ".join(bad) or f"layers {layers.start}-{layers.stop - 1}"
                raise ValueError(f"{store.directory}: label set {label_set!r}, {where}: {err}"
                                 ) from err
        if interval_reason:  # a later chunk failing leaves no partial interval behind
            for k in ("svcca_low", "svcca_high", "svcca_degenerate", "svcca_samples", "speakers"):
                scores.pop(k, None)
        # the random floors are per draw, not per layer: the first chunk's
        result = {k: (v[0] if k in ("svcca_random", "probe_random", "speakers")
                      else np.concatenate(v, axis=0 if k == "probe_correct" else -1))
                  for k, v in scores.items()}
        if "probe_correct" in result:
            result.update(_probe_interval(result.pop("probe_correct"), speakers, split[1],
                                          bootstrap, seed))
        if log_mel is not None:
            result.update(_log_mel_scores(log_mel[rows], classes, num_classes, split))
        if interval_reason:
            result["interval_reason"] = interval_reason
        if probe_reason:
            result["probe_reason"] = probe_reason
        result["samples"] = np.full(store.num_layers, len(rows))
        result["classes"] = np.full(store.num_layers, num_classes)
        results[label_set] = result
        logging.info("%s: %s scored on %d segments, %d classes", store.directory, label_set,
                     len(rows), num_classes)
    if not any("skipped" not in r for r in results.values()):
        raise ValueError(f"{store.directory}: no label set could be scored: "
                         + "; ".join(f"{k}: {r['skipped']}" for k, r in results.items()))
    return results


def _probe_interval(correct: np.ndarray, speakers: np.ndarray, test: np.ndarray,
                    bootstrap: int, seed: int) -> dict[str, np.ndarray | str]:
    """probe_accuracy_low / _high (L,) over resamples of the probe's held-out speakers."""
    if not bootstrap:
        return {}
    ids, which = np.unique(speakers[test], return_inverse=True)
    hits = np.stack([np.bincount(which, weights=c[test], minlength=len(ids)) for c in correct], 1)
    try:
        rate = rate_bootstrap(hits, np.bincount(which, minlength=len(ids)),
                              num_samples=bootstrap, seed=seed)
    except TooFewSpeakers as err:
        return {"probe_interval_reason": f"{err} held out for the probe"}
    return {"probe_accuracy_low": rate["low"], "probe_accuracy_high": rate["high"]}


def _log_mel_scores(features: np.ndarray, classes: np.ndarray, num_classes: int,
                    split: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    out = {"svcca_logmel": np.asarray(svcca_layers(features[None], classes))[0]}
    if split is not None:
        out["probe_logmel"] = probe_layers(features[None], classes, *split,
                                           num_classes=num_classes)["accuracy"][0]
    return out


def layer_similarity(reference: store_lib.Store, other: store_lib.Store, *,
                     max_samples: int | None = None, seed: int = 0) -> np.ndarray:
    """(L,) SVCCA between layer i of `reference` and layer i of `other` on the same segments
    (Pasad et al.'s layer-to-layer comparison): 1 where fine-tuning left a layer's
    subspace as it was, lower where it changed it."""
    for column in ("utterance", "frame"):
        if not np.array_equal(reference.table[column], other.table[column]):
            raise ValueError(f"{reference.directory} and {other.directory} hold different "
                             f"segments ({column} differs): extract both from the same split")
    if reference.num_layers != other.num_layers:
        raise ValueError(f"{reference.directory} has {reference.num_layers} layers, "
                         f"{other.directory} {other.num_layers}")
    rows = np.arange(len(reference))
    if max_samples and len(rows) > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    width = reference.info["hidden_size"] + other.info["hidden_size"]
    if len(rows) <= width:
        raise ValueError(f"{len(rows)} segments are too few to compare layers of width "
                         f"{width // 2}: CCA needs more than {width}")
    return np.array([float(svcca(reference.layer(i, rows), other.layer(i, rows)))
                     for i in range(reference.num_layers)])


def _probe_split(store: store_lib.Store, label_set: str, rows: np.ndarray, classes: np.ndarray,
                 speakers: np.ndarray, seed: int
                 ) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """(speaker-disjoint (train, test) masks, "") for the probes, or (None, the reason)
    if they cannot be trained: one speaker only, or a class no training speaker holds."""
    if len(np.unique(speakers)) < 2:
        reason = "one speaker only, so no held-out speakers"
    else:
        train, test = speaker_split(speakers, test_fraction=0.25, seed=seed)
        missing = np.setdiff1d(np.unique(classes), classes[train])
        if not len(missing):
            return (train, test), ""
        present = np.unique(store.table[label_set][rows])  # class i of `classes` is present[i]
        names = [L.INVENTORIES[label_set][c] for c in present[missing]]
        reason = f"classes {names} occur only in held-out speakers"
    logging.warning("%s: %s: no probe: %s", store.directory, label_set, reason)
    return None, reason


def _is_curve(values, num_layers: int) -> bool:
    return isinstance(values, np.ndarray) and values.shape == (num_layers,)


def write_scores(scores: dict[str, Scores], out_dir: files.PathLike) -> None:
    """scores.csv (model, label_set, score, layer, value) of the per-layer curves, and
    scores.json with everything (resamples, floors, reasons a part is missing)."""
    out_dir = files.path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["model", "label_set", "score", "layer", "value"])
    for model, by_label in scores.items():
        for label_set, by_score in by_label.items():
            layers = len(by_score.get("samples", ()))
            for name, values in by_score.items():
                if _is_curve(values, layers):
                    writer.writerows((model, label_set, name, i, f"{v:.6g}")
                                     for i, v in enumerate(values))
    files.write_text(out_dir / "scores.csv", table.getvalue())
    as_lists = {m: {ls: {k: v if isinstance(v, str) else np.asarray(v).tolist()
                         for k, v in d.items()} for ls, d in by.items()} for m, by in scores.items()}
    files.write_json(out_dir / "scores.json", as_lists)


def _scored(by: Scores) -> dict[str, dict]:
    return {ls: d for ls, d in by.items() if "skipped" not in d}


def chance_band(scores: dict[str, Scores], label_set: str, prefix: str
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per layer, the lowest and highest chance score over models: random Gaussian
    features (every draw) and each model's layers against permuted labels."""
    floors = []
    for by in scores.values():
        d = _scored(by).get(label_set, {})
        if f"{prefix}_permuted" in d:
            layers = len(d[f"{prefix}_permuted"])
            floors.append(d[f"{prefix}_permuted"])
            floors += [np.full(layers, v) for v in np.ravel(d.get(f"{prefix}_random", []))]
    if not floors:
        return None
    floors = np.stack(floors)
    return floors.min(axis=0), floors.max(axis=0)


def floor_text(scores: dict[str, Scores]) -> str:
    """The chance floor in numbers: per label set, the highest SVCCA that random features or
    permuted labels reached at any layer (the top of the grey band)."""
    floors = {ls: float(band[1].max()) for ls in dict.fromkeys(
        ls for by in scores.values() for ls in _scored(by)) if (band := chance_band(scores, ls, "svcca"))}
    if not floors:
        return "No chance floor was computed."
    return ("Chance floor (the top of the grey band: random features of the model's width and "
            "permuted labels, any layer): " + ", ".join(f"{ls} {v:.2f}" for ls, v in floors.items())
            + ".")


_FIGURES = (  # (score, floor prefix, axis label, file)
    ("svcca", "svcca", "SVCCA", "svcca_layers"),
    ("probe_accuracy", "probe", "probe accuracy (held-out speakers)", "probe_layers"),
    ("pwcca", None, "PWCCA", "pwcca_layers"),
    ("cka", None, "linear CKA", "cka_layers"),
)


def layer_figures(scores: dict[str, Scores], out_dir: str) -> list[tuple[str, str]]:
    """Per score: one panel per label set, one curve per model, the speaker-bootstrap
    band, the grey chance band and the log-mel line; returns (score, PNG name) pairs."""
    from w2v_jax.analysis import plots

    written = []
    for metric, prefix, ylabel, name in _FIGURES:
        curves, bands, chance, reference = {}, {}, {}, {}
        for model, by in scores.items():
            for label_set, d in _scored(by).items():
                if metric not in d:
                    continue
                curves.setdefault(label_set, {})[model] = d[metric]
                if f"{metric}_low" in d:
                    bands.setdefault(label_set, {})[model] = (d[f"{metric}_low"], d[f"{metric}_high"])
                if prefix and f"{prefix}_logmel" in d:
                    reference[label_set] = float(d[f"{prefix}_logmel"])
        if not curves:
            continue
        if prefix:
            chance = {ls: band for ls in curves if (band := chance_band(scores, ls, prefix))}
        path = plots.plot_layer_panels(curves, os.path.join(out_dir, name), intervals=bands,
                                       chance=chance, reference=reference, ylabel=ylabel)[0]
        written.append((metric, os.path.basename(path)))
    return written


def similarity_figure(similarity: dict[str, np.ndarray], out_dir: str) -> str:
    """One panel: per fine-tuned model, SVCCA of each layer with the pre-trained one's."""
    from w2v_jax.analysis import plots

    path = plots.plot_layer_panels({"each layer vs the same pre-trained layer": similarity},
                                   os.path.join(out_dir, "layer_similarity"),
                                   ylabel="SVCCA with pre-trained")[0]
    return os.path.basename(path)


def _ranges(layers: np.ndarray) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    if not len(layers):
        return "none"
    runs, start = [], layers[0]
    for prev, cur in zip(layers, list(layers[1:]) + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(runs)


def above_chance_table(scores: dict[str, Scores]) -> str:
    """Markdown: per model and label set, the layers whose SVCCA (its interval's low end,
    when there is one) lies above the chance band, and those above the log-mel line."""
    rows = []
    for model, by in scores.items():
        for label_set, d in _scored(by).items():
            if "svcca" not in d:
                continue
            low = d.get("svcca_low", d["svcca"])
            band = chance_band(scores, label_set, "svcca")
            above = _ranges(np.nonzero(low > band[1])[0]) if band else "— (no floors computed)"
            mel = (_ranges(np.nonzero(low > d["svcca_logmel"])[0]) if "svcca_logmel" in d
                   else "— (no log-mel features)")
            rows.append([model, label_set, above, mel])
    return markdown_table(["model", "labels", "layers above chance", "layers above log-mel"], rows)


def missing_table(scores: dict[str, Scores]) -> str | None:
    """Markdown: what was not scored or has no interval, and why (None when nothing)."""
    rows = []
    for model, by in scores.items():
        for label_set, d in by.items():
            for key, what in (("skipped", "not scored"), ("interval_reason", "no SVCCA interval"),
                              ("probe_reason", "no probe"),
                              ("probe_interval_reason", "no probe interval")):
                if key in d:
                    rows.append([model, label_set, what, d[key]])
    return markdown_table(["model", "labels", "missing", "why"], rows) if rows else None


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
    """A Markdown table; every row must have a cell per column ("|" in a cell is escaped)."""
    cell = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row {list(row)} has {len(row)} cells for {len(header)} "
                             f"columns {list(header)}")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def score_table(scores: dict[str, Scores], metric: str = "svcca") -> str:
    """Markdown: one row per (model, label set), one column per layer ("—" past a short model)."""
    rows = [[model, label_set, *(f"{v:.2f}" for v in d[metric])]
            for model, by in scores.items() for label_set, d in _scored(by).items() if metric in d]
    if not rows:
        raise ValueError(f"no {metric} scores to tabulate for {sorted(scores)}: "
                         "every label set was skipped, or the metric was not computed")
    width = max(len(r) for r in rows)
    rows = [r + ["—"] * (width - len(r)) for r in rows]
    return markdown_table(["model", "labels", *range(width - 2)], rows)


def write_report(scores: dict[str, Scores], stores: dict[str, store_lib.Store], out_dir: str, *,
                 claims: Sequence[dict] | None = None,
                 similarity: dict[str, np.ndarray] | None = None,
                 projection_layers: Sequence[int] = (0, -1), umap: bool = True,
                 title: str = "Layer-wise analysis", sections: Sequence[str] = ()) -> str:
    """scores.csv/json, the figures and report.md; returns report.md's path.

    claims: from `claims.check_claims`; their verdict table comes first.
    similarity: {fine-tuned model: (L,)} from `layer_similarity` against the pre-trained store.
    sections: Markdown blocks placed after the verdicts and what is missing.
    """
    from w2v_jax.analysis.claims import CLAIMS_HEADER, claims_table

    if not any(_scored(by) for by in scores.values()):
        raise ValueError(f"nothing to report for {sorted(scores)}: no label set was scored")
    write_scores(scores, out_dir)
    parts = [f"# {title}", ""]
    if claims is not None:
        parts += ["## The paper's claims: verdicts", "",
                  "Each statistic is paired over the same speaker resamples; 95% basic "
                  "bootstrap interval over test speakers. holds: the interval lies on the claimed "
                  "side of zero (inside the margin, for the same accuracy); fails: on the other "
                  "side; undecided: otherwise, or the reason given.", "",
                  markdown_table(CLAIMS_HEADER, claims_table(claims)), ""]
    missing = missing_table(scores)
    if missing:
        parts += ["## Not scored, and why", "", missing, ""]
    parts += list(sections)
    for metric, figure in layer_figures(scores, out_dir):
        name = dict((m, label) for m, _, label, _ in _FIGURES)[metric]
        parts += [f"## {name} against the labels, per layer", "",
                  "Grey: chance (random Gaussian features of the same N and width, and each "
                  "layer against permuted labels); dashed: 80-band log-mel at the model's frame "
                  "rate; shaded: 95% speaker-bootstrap interval.", "",
                  f"![{name} per layer]({figure})", "", score_table(scores, metric), ""]
        if metric == "svcca":
            parts += [floor_text(scores), "", "### Above chance", "", above_chance_table(scores), ""]
    if similarity:
        figure = similarity_figure(similarity, out_dir)
        parts += ["## Where fine-tuning changed the model", "",
                  "SVCCA between each layer of a fine-tuned model and the same layer of the "
                  "pre-trained model, on the same segments (1: unchanged subspace).", "",
                  f"![layer-to-layer SVCCA]({figure})", "",
                  markdown_table(["model", *range(max(len(v) for v in similarity.values()))],
                                 [[m, *(f"{x:.2f}" for x in v)]
                                  + ["—"] * (max(len(v) for v in similarity.values()) - len(v))
                                  for m, v in similarity.items()]), ""]
    projections = projection_figures(stores, out_dir, projection_layers, umap=umap)
    if projections:
        parts += ["## Projections", ""] + [f"![{p}]({p})" for p in projections] + [""]
    parts += ["Stores: " + ", ".join(f"{m} = `{s.directory}`" for m, s in stores.items()), ""]
    path = os.path.join(out_dir, "report.md")
    files.write_text(path, "\n".join(parts))
    return path
