"""A fine-tuning sweep: how the paper's headline claim depends on length, depth and learning rate.

    WORKDIR/corpus/            one generated corpus, shared by every point
    WORKDIR/points/<name>/     one experiment per point (pipeline.run: train, extract, report)
    WORKDIR/sweep.json         per point: its settings, test accuracy and the tracked claims
    WORKDIR/sweep.md, sweep.png

Points are one factor at a time around config.sweep.centre (configs/headline_sweep.py says
what each factor means). Each point is a whole experiment with its own manifest, so an
interrupted sweep resumes where it stopped; the tables are rewritten from the points' claims.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections
import numpy as np
from absl import logging

from w2v_jax import files
from w2v_jax.analysis.plots import plot_interval_panels
from w2v_jax.analysis.report import markdown_table
from w2v_jax.experiment import pipeline, tables
from w2v_jax.experiment.manifest import Manifest
from w2v_jax.models import ConfigError

FACTORS = ("total_steps", "depth", "learning_rate")
DEPTHS = ("heads", "encoder", "all")
# (model, label, kind) of the claims tracked, as in w2v_jax.analysis.claims.paper_claims:
# the headline, and the one that says whether a fine-tuning took at all.
HEADLINE = ("tone", "sex", "falls")
TOOK = ("tone", "tone", "rises")


def points(sweep: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The centre, then each factor's other values with the rest at the centre's."""
    centre = {f: sweep.centre[f] for f in FACTORS}
    for factor in FACTORS:
        if centre[factor] not in tuple(sweep[factor]):
            raise ConfigError(f"config.sweep.centre.{factor}={centre[factor]!r} is not one of "
                              f"config.sweep.{factor}={tuple(sweep[factor])!r}")
    for depth in sweep.depth:
        if depth not in DEPTHS:
            raise ConfigError(f"config.sweep.depth: {depth!r} is not one of {DEPTHS}")
    out = [{"name": "centre", "factor": None, **centre}]
    for factor in FACTORS:
        for value in sweep[factor]:
            if value != centre[factor]:
                out.append({"name": f"{factor}={value}", "factor": factor, **centre, factor: value})
    return out


def point_config(config: ml_collections.ConfigDict, point: dict[str, Any],
                 corpus: str) -> ml_collections.ConfigDict:
    """The experiment config of one point: the sweep's base with its fine-tuning changed."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c.sweep
    t, steps = c.train, int(point["total_steps"])
    t.data.dir = corpus
    t.total_steps = steps
    t.optimizer.learning_rate = float(point["learning_rate"])
    t.freeze_steps = steps if point["depth"] == "heads" else round(steps * config.sweep.heads_fraction)
    t.freeze_feature_encoder = point["depth"] != "all"
    t.eval_every = t.checkpoint_every = max(1, steps // config.sweep.evaluations)
    return c


def _claim(claims: list[dict], model: str, label: str, kind: str) -> dict:
    return next(c for c in claims if (c["model"], c["label"], c["kind"]) == (model, label, kind))


def run(config: ml_collections.ConfigDict, workdir: files.PathLike,
        say: Callable[[str], None] = logging.info) -> list[dict[str, Any]]:
    """Every point's experiment (resuming finished ones), then sweep.json, sweep.md, sweep.png."""
    if tuple(config.finetune) != (HEADLINE[0],):
        raise ConfigError(f"config.finetune={tuple(config.finetune)!r}: a sweep fine-tunes "
                          f"{HEADLINE[0]!r} alone")
    corpus = pipeline.corpus_dir(config, workdir, Manifest(workdir))
    rows = []
    todo = points(config.sweep)
    for i, point in enumerate(todo, 1):
        say(f"sweep point {i}/{len(todo)}: {point['name']}")
        c = point_config(config, point, corpus)
        result = pipeline.run(c, str(files.path(workdir) / "points" / point["name"]), say=say)
        metrics = result["accuracy"][HEADLINE[0]]
        rows.append({**point, "freeze_steps": c.train.freeze_steps, "best_step": metrics["step"],
                     "test_accuracy": tables.test_accuracy(metrics, HEADLINE[0], c.extract.split),
                     "headline": _claim(result["claims"], *HEADLINE),
                     "took": _claim(result["claims"], *TOOK)})
    out = files.path(workdir)
    files.write_json(out / "sweep.json", rows)
    files.write_text(out / "sweep.md", report_text(rows))
    figure(rows, out / "sweep")
    return rows


def _interval(claim: dict) -> str:
    if claim["ci"] is None:
        return f"— ({claim['reason']})"
    return f"{claim['estimate']:+.3f} [{claim['ci'][0]:+.3f}, {claim['ci'][1]:+.3f}] **{claim['verdict']}**"


def report_text(rows: list[dict[str, Any]]) -> str:
    headline, took = rows[0]["headline"]["claim"], rows[0]["took"]["claim"]
    table = markdown_table(
        ["point", "updates (heads alone)", "depth", "lr", "best step", "tone accuracy",
         "headline: sex top-layer SVCCA change", "tone top-layer SVCCA change"],
        [[r["name"], f"{r['total_steps']} ({r['freeze_steps']})", r["depth"], f"{r['learning_rate']:g}",
          r["best_step"], "—" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}",
          _interval(r["headline"]), _interval(r["took"])] for r in rows])
    held = [r["name"] for r in rows if r["headline"]["verdict"] == "holds"]
    failed = [r["name"] for r in rows if r["headline"]["verdict"] == "fails"]
    return "\n".join([
        "# The headline claim against fine-tuning length, depth and learning rate", "",
        f"Headline: \"{headline}\". Each change is the tone model's top-layer SVCCA minus the "
        "pre-trained model's, with its 95% speaker-bootstrap interval and verdict; the second "
        f"change tests \"{took}\" (did the fine-tuning take at all).", "",
        table, "",
        f"The headline holds at: {', '.join(held) or 'no point'}; fails at: "
        f"{', '.join(failed) or 'no point'}; undecided elsewhere.", "",
        "![the headline statistic per point](sweep.png)", ""])


def figure(rows: list[dict[str, Any]], out: files.PathLike) -> None:
    """One panel per factor: both tracked changes, with their intervals, against its values."""
    centre = next(r for r in rows if r["factor"] is None)
    panels = {}
    for factor in FACTORS:
        series = sorted([centre, *(r for r in rows if r["factor"] == factor)],
                        key=lambda r: DEPTHS.index(r[factor]) if factor == "depth" else r[factor])
        panels[factor.replace("_", " ")] = (
            [f"{r[factor]:g}" if factor == "learning_rate" else str(r[factor]) for r in series],
            {name: np.array([[np.nan] * 3 if r[key]["ci"] is None else
                              [r[key]["estimate"], *r[key]["ci"]] for r in series]).T
             for key, name in (("headline", "sex (headline: falls)"), ("took", "tone (rises)"))})
    plot_interval_panels(panels, out, ylabel="top-layer SVCCA change\n(tone model - pre-trained)")
