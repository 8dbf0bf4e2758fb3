"""The paper's grid in one call: corpus -> fine-tunings -> test accuracy -> extraction -> report.

    WORKDIR/corpus/              synthetic corpus (synthetic configs only)
    WORKDIR/train/<model>/       training run; backbone/ is the fine-tuned backbone
    WORKDIR/train/<model>/test_metrics.json
    WORKDIR/embeddings/<model>/  embedding store of the test split
    WORKDIR/report/              report.md, figures, scores, accuracy.csv, claims.json

Every stage writes its outputs atomically and is skipped when they exist, so an
interrupted experiment resumes where it stopped (a training run resumes from its
latest checkpoint).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from typing import Any, Callable

import ml_collections
import numpy as np
from absl import logging

from w2v_jax.data.labels import task_weights
from w2v_jax import checkpoint, data
from w2v_jax.files import write_json
from w2v_jax.analysis.extract import extract
from w2v_jax.analysis.report import markdown_table, score_store, write_report
from w2v_jax.analysis.store import Store
from w2v_jax.train import build, evaluate_run, train

PRETRAINED = "pretrained"
LABEL_SETS = ("tone", "final", "sex")


def corpus_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """The corpus: config.train.data.dir, or a synthetic one made once under WORKDIR/corpus."""
    if not config.synthetic.enabled:
        return config.train.data.dir
    out = os.path.join(workdir, "corpus")
    if not os.path.exists(out):
        from w2v_jax.data import synthetic
        staging = out + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        synthetic.make_corpus(staging, num_speakers=config.synthetic.speakers,
                              utterances_per_speaker=config.synthetic.utterances,
                              seed=config.synthetic.seed)
        os.replace(staging, out)
        logging.info("made the synthetic corpus in %s", out)
    return out


def train_config(config: ml_collections.ConfigDict, tasks: str, corpus: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.train.to_dict())
    c.tasks = task_weights(tasks)
    c.data.dir = corpus
    return c


def _fine_tune(config, tasks: str, corpus: str, run_dir: str) -> dict:
    """Train (or resume) one model and measure it on the test split; both skipped when done."""
    backbone_dir = os.path.join(run_dir, "backbone")
    if not os.path.exists(backbone_dir):
        summary = train(train_config(config, tasks, corpus), run_dir)
        if summary["stopped"] != "done":
            raise RuntimeError(f"training {tasks} stopped early ({summary['stopped']}) at step "
                               f"{summary['step']}; see {run_dir}/metrics.jsonl")
    metrics_path = os.path.join(run_dir, "test_metrics.json")
    if not os.path.exists(metrics_path):
        write_json(metrics_path, evaluate_run(run_dir, config.extract.split, step="latest"))
    with open(metrics_path) as f:
        return json.load(f)


def _backbones(config, corpus: str, workdir: str):
    """(name, backbone loader) for the pre-trained model and each fine-tuned one."""
    base = train_config(config, config.finetune[0], corpus)
    yield PRETRAINED, lambda: build.backbone(base, build.backbone_config(base))
    for tasks in config.finetune:
        yield tasks, lambda tasks=tasks: checkpoint.load_model(
            os.path.join(workdir, "train", tasks, "backbone"))


def run(config: ml_collections.ConfigDict, workdir: str,
        say: Callable[[str], None] = logging.info) -> dict[str, Any]:
    """The whole experiment; returns {"accuracy", "scores", "claims", "report"}."""
    corpus = corpus_dir(config, workdir)
    accuracy = {}
    for tasks in config.finetune:
        say(f"fine-tuning: {tasks}")
        accuracy[tasks] = _fine_tune(config, tasks, corpus, os.path.join(workdir, "train", tasks))

    stores = {}
    for name, load in _backbones(config, corpus, workdir):
        out = os.path.join(workdir, "embeddings", name)
        if not os.path.exists(out):
            say(f"extracting: {name}")
            model = load()
            split = build.load_split(train_config(config, "tone", corpus), config.extract.split,
                                     model.config)
            extract(model, split, out, batch_size=config.extract.batch_size,
                    dtype=config.extract.dtype, description=name)
        stores[name] = Store(out)

    say("analysing")
    a = config.analysis
    scores = {name: score_store(store, label_sets=LABEL_SETS, metrics=tuple(a.metrics),
                                probes=a.probes, bootstrap=a.bootstrap,
                                max_samples=a.max_samples or None, seed=config.train.seed)
              for name, store in stores.items()}
    claims = check_claims(scores, accuracy, config.claims, config.extract.split)
    report_dir = os.path.join(workdir, "report")
    os.makedirs(report_dir, exist_ok=True)
    write_accuracy(accuracy, report_dir, config.extract.split)
    write_json(os.path.join(report_dir, "claims.json"), claims)
    report = write_report(
        scores, stores, report_dir, projection_layers=tuple(a.projection_layers), umap=a.umap,
        title="Normalization through fine-tuning: the paper's grid",
        sections=[_setup_text(config, corpus), "## Frame accuracy on the test split", "",
                  accuracy_table(accuracy, config.extract.split), "",
                  "## The paper's claims, checked", "", claims_text(claims), ""])
    return {"accuracy": accuracy, "scores": scores, "claims": claims, "report": report}


# ------------------------------------------------------------------ tables
def _accuracy(metrics: dict, task: str, split: str) -> float | None:
    return metrics.get(f"{split}/{task}/accuracy")


def accuracy_table(accuracy: dict[str, dict], split: str) -> str:
    rows = [[model, *(f"{a:.3f}" if (a := _accuracy(m, t, split)) is not None else "—"
                      for t in LABEL_SETS)] for model, m in accuracy.items()]
    return markdown_table(["model", *LABEL_SETS], rows)


def write_accuracy(accuracy: dict[str, dict], out_dir: str, split: str) -> None:
    with open(os.path.join(out_dir, "accuracy.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "task", "accuracy", "frames"])
        for model, m in accuracy.items():
            for task in LABEL_SETS:
                if _accuracy(m, task, split) is not None:
                    writer.writerow([model, task, f"{_accuracy(m, task, split):.4f}",
                                     m.get(f"{split}/{task}/frames")])


def svcca_summary(scores: dict, top_fraction: float) -> str:
    """Markdown: mean SVCCA over the top layers, per model and label set."""
    rows = [[model, *(f"{top_mean(by[ls]['svcca'], top_fraction):.3f}" if ls in by else "—"
                      for ls in LABEL_SETS)] for model, by in scores.items()]
    return markdown_table(["model", *(f"{ls} (top layers)" for ls in LABEL_SETS)], rows)


def _setup_text(config, corpus: str) -> str:
    t = config.train
    kind = "synthetic corpus (see w2v_jax/data/synthetic.py)" if config.synthetic.enabled else "corpus"
    return (f"Backbone `{t.init}`" + (f" (preset {t.model.preset}, seed {t.seed})" if t.init == "random" else "")
            + f"; {kind} `{corpus}`; fine-tuned {t.freeze_steps} steps heads-only then to "
            f"{t.total_steps} steps; embeddings of the `{config.extract.split}` split at the "
            "central frame of every phone.\n")


# ------------------------------------------------------------------ claims
def top_mean(values: np.ndarray, top_fraction: float) -> float:
    """Mean over the top `top_fraction` of the layers (at least one)."""
    values = np.asarray(values)
    k = max(1, int(round(len(values) * top_fraction)))
    return float(values[-k:].mean())


def check_claims(scores: dict, accuracy: dict, c: ml_collections.ConfigDict,
                 split: str) -> list[dict]:
    """The paper's claims as holds / does not hold, each with its figures."""
    top = lambda model, label: (top_mean(scores[model][label]["svcca"], c.top_fraction)
                                if model in scores and label in scores[model] else None)
    claims = []

    def claim(text, holds, figures):
        if holds is not None:
            claims.append({"claim": text, "holds": bool(holds), "figures": figures})

    def compare(model, label, rises):
        mine, base = top(model, label), top(PRETRAINED, label)
        if mine is None or base is None:
            return
        verb = "rises" if rises else "falls"
        claim(f"fine-tuned for {model}: {label} SVCCA {verb} in the top layers",
              mine > base if rises else mine < base,
              f"{label} top-layer SVCCA {base:.3f} pre-trained -> {mine:.3f}")

    for model in scores:
        if model == PRETRAINED:
            continue
        tasks = model.split("+")
        for task in tasks:
            compare(model, task, rises=True)
        for label in LABEL_SETS:
            if label not in tasks and "+" not in model and not {label, *tasks} <= {"tone", "final"}:
                compare(model, label, rises=False)  # tone and finals share the syllable: not irrelevant
        if len(tasks) > 1:
            for task in tasks:
                multi, mono = top(model, task), top(task, task)
                if multi is not None and mono is not None:
                    claim(f"multi-task {model} keeps {task} as its mono-task model does",
                          multi >= c.keep_fraction * mono,
                          f"{task} top-layer SVCCA {mono:.3f} mono vs {multi:.3f} multi "
                          f"(holds at >= {c.keep_fraction:.0%} of mono)")
                a_multi = _accuracy(accuracy.get(model, {}), task, split)
                a_mono = _accuracy(accuracy.get(task, {}), task, split)
                if a_multi is not None and a_mono is not None:
                    claim(f"{task} accuracy is the same mono-task ({task}) and multi-task ({model})",
                          abs(a_multi - a_mono) <= c.same_accuracy,
                          f"{a_mono:.3f} vs {a_multi:.3f} (same within {c.same_accuracy:.3f})")
    return claims


def claims_text(claims: list[dict]) -> str:
    if not claims:
        return "No claim could be checked (missing models or label sets)."
    return "\n".join(f"- **{'holds' if c['holds'] else 'does not hold'}**: {c['claim']} "
                     f"({c['figures']})" for c in claims)


def summary_text(result: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    """What a terminal shows at the end: accuracy, top-layer SVCCA, claims, the report's path."""
    return "\n".join([
        "", f"Frame accuracy ({config.extract.split} split):", accuracy_table(result["accuracy"],
                                                                          config.extract.split),
        "", "SVCCA against the labels, mean of the top layers:",
        svcca_summary(result["scores"], config.claims.top_fraction),
        "", "The paper's claims:", claims_text(result["claims"]), "", f"Report: {result['report']}"])


def run_and_print(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """`run` with its stages and summary on the terminal (the launch entry points)."""
    result = run(config, workdir, say=print)
    print(summary_text(result, config))
    return result
