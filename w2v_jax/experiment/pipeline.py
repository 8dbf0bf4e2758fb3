"""The paper's grid in one call: corpus -> fine-tunings -> test accuracy -> extraction -> report.

    WORKDIR/manifest.json        the finished stages and what produced them
    WORKDIR/corpus/              generated corpus (when config.train.data.dir is empty)
    WORKDIR/train/<model>/       training run; backbone/ is the best checkpoint's backbone
    WORKDIR/train/<model>/test_metrics.json   test accuracy of that same checkpoint
    WORKDIR/embeddings/<model>/  embedding store of the test split
    WORKDIR/report/              report.md, figures, scores, accuracy.csv, claims.json

A stage is skipped when the manifest records it as finished under the same inputs, so an
interrupted experiment resumes where it stopped (a training run resumes from its latest
checkpoint; an extraction from its last saved batch). The report is always rewritten.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

import ml_collections
from absl import logging

from w2v_jax import checkpoint, files
from w2v_jax.analysis.extract import extract
from w2v_jax.analysis.baselines import log_mel_at_frames
from w2v_jax.analysis.claims import CLAIMS_HEADER, LABEL_SETS, PRETRAINED, check_claims, claims_table
from w2v_jax.analysis.report import layer_similarity, markdown_table, score_store, write_report
from w2v_jax.analysis.store import Store
from w2v_jax.data.labels import task_weights
from w2v_jax.experiment import tables
from w2v_jax.experiment.manifest import Manifest
from w2v_jax.models import ConfigError
from w2v_jax.train import build, evaluate_run, fingerprint, train


def corpus_dir(config: ml_collections.ConfigDict, workdir: str, manifest: Manifest) -> str:
    """The corpus: config.train.data.dir when given, else one generated once under WORKDIR/corpus."""
    if config.train.data.dir:
        return config.train.data.dir
    out = files.local_only(os.path.join(workdir, "corpus"),
                           "a generated corpus (give a local one in config.train.data.dir)")
    recipe = config.corpus.to_dict()
    if not manifest.done("corpus", recipe):
        for leftover in (out, out + ".partial"):  # unrecorded: left by an interrupted run
            shutil.rmtree(leftover, ignore_errors=True)
        c = config.corpus
        if c.generator == "espeak":
            from w2v_jax.data import espeak
            espeak.make_corpus(out, speakers=c.speakers, utterances=c.utterances, seed=c.seed,
                               dev_speakers=c.dev_speakers, test_speakers=c.test_speakers,
                               progress=True)
        elif c.generator == "formant":
            from w2v_jax.data import synthetic
            synthetic.make_corpus(out + ".partial", num_speakers=c.speakers,
                                  utterances_per_speaker=c.utterances, seed=c.seed)
            os.replace(out + ".partial", out)
        else:
            raise ConfigError(f"config.corpus.generator={c.generator!r}: use 'espeak' or 'formant', "
                              "or give a corpus with config.train.data.dir")
        manifest.record("corpus", recipe, dir=out)
        logging.info("made the %s corpus in %s", c.generator, out)
    return out


def train_config(config: ml_collections.ConfigDict, tasks: str, corpus: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.train.to_dict())
    c.tasks = task_weights(tasks)
    c.data.dir = corpus
    return c


def _fine_tune(config, tasks: str, corpus: str, run_dir: str, manifest: Manifest) -> dict:
    """Train (or resume) one model, then measure its best checkpoint on the test split."""
    produced_by = {"train": fingerprint(train_config(config, tasks, corpus))}
    if not manifest.done(f"train/{tasks}", produced_by):
        summary = train(train_config(config, tasks, corpus), run_dir)
        if summary["stopped"] != "done":
            raise RuntimeError(f"training {tasks} stopped early ({summary['stopped']}) at step "
                               f"{summary['step']}; see {run_dir}/metrics.jsonl")
        manifest.record(f"train/{tasks}", produced_by, run_dir=run_dir,
                        backbone=os.path.join(run_dir, "backbone"))
    metrics_path = os.path.join(run_dir, "test_metrics.json")
    produced_by = {**produced_by, "split": config.extract.split}
    if not manifest.done(f"test/{tasks}", produced_by):
        metrics = evaluate_run(run_dir, config.extract.split, step="best")
        files.write_json(metrics_path, metrics)
        manifest.record(f"test/{tasks}", produced_by, metrics=metrics_path, step=metrics["step"])
    return files.read_json(metrics_path)


def _backbones(config, corpus: str, manifest: Manifest):
    """(name, what produced it, backbone loader) for the pre-trained model and each fine-tuned one."""
    base = train_config(config, config.finetune[0], corpus)
    yield PRETRAINED, {"init": base.init, "seed": base.seed, "model": base.model.to_dict()}, \
        lambda: build.backbone(base, build.backbone_config(base))
    for tasks in config.finetune:
        trained = manifest.stages[f"train/{tasks}"]
        yield tasks, trained["produced_by"], \
            lambda trained=trained: checkpoint.load_model(trained["outputs"]["backbone"])


def run(config: ml_collections.ConfigDict, workdir: str,
        say: Callable[[str], None] = logging.info) -> dict[str, Any]:
    """The whole experiment; returns {"accuracy", "scores", "claims", "report"}."""
    manifest = Manifest(workdir)
    corpus = corpus_dir(config, workdir, manifest)
    accuracy = {}
    for tasks in config.finetune:
        say(f"fine-tuning: {tasks}")
        accuracy[tasks] = _fine_tune(config, tasks, corpus, os.path.join(workdir, "train", tasks),
                                     manifest)

    stores = {}
    for name, produced_by, load in _backbones(config, corpus, manifest):
        out = os.path.join(workdir, "embeddings", name)
        produced_by = {**produced_by, "extract": config.extract.to_dict()}
        if not manifest.done(f"extract/{name}", produced_by):
            say(f"extracting: {name}")
            model = load()
            split = build.load_split(train_config(config, "tone", corpus), config.extract.split,
                                     model.config)
            extract(model, split, out, batch_size=config.extract.batch_size,
                    dtype=config.extract.dtype, description=name)
            manifest.record(f"extract/{name}", produced_by, store=out)
        stores[name] = Store(out)

    say("analysing")
    a, c = config.analysis, config.claims
    mel = _log_mel(config, corpus, stores[PRETRAINED]) if a.log_mel else None
    scores = {name: score_store(store, label_sets=LABEL_SETS, metrics=tuple(a.metrics),
                                probes=a.probes, bootstrap=a.bootstrap,
                                max_samples=a.max_samples or None, seed=config.train.seed,
                                log_mel=mel)
              for name, store in stores.items()}
    split_name = config.extract.split
    by_speaker = {tasks: {task: m[f"{split_name}/{task}/by_speaker"] for task in LABEL_SETS
                          if f"{split_name}/{task}/by_speaker" in m}
                  for tasks, m in accuracy.items()}
    claims = check_claims(scores, by_speaker,
                          top_fraction=c.top_fraction, keep_fraction=c.keep_fraction,
                          same_accuracy_margin=c.same_accuracy, fine_tunings=tuple(config.finetune),
                          num_samples=a.bootstrap, seed=config.train.seed)
    similarity = {tasks: layer_similarity(stores[PRETRAINED], stores[tasks],
                                          max_samples=a.max_samples or None)
                  for tasks in config.finetune}
    report_dir = os.path.join(workdir, "report")
    files.path(report_dir).mkdir(parents=True, exist_ok=True)
    tables.write_accuracy(accuracy, report_dir, config.extract.split)
    files.write_json(files.path(report_dir) / "claims.json", claims)
    report = write_report(
        scores, stores, report_dir, claims=claims, similarity=similarity,
        projection_layers=tuple(a.projection_layers), umap=a.umap,
        title="Normalization through fine-tuning: the paper's grid",
        sections=[tables.setup_text(config, corpus), "## Frame accuracy on the test split", "",
                  "Each fine-tuned model is measured and extracted at its best checkpoint by dev "
                  f"{config.train.best_metric}.", "",
                  tables.accuracy_table(accuracy, config.extract.split), ""])
    return {"accuracy": accuracy, "scores": scores, "claims": claims, "report": report}


def _log_mel(config, corpus: str, store: Store):
    """80-band log-mel at the model's frame rate, at the store's central frames (the baseline line)."""
    model_config = build.backbone_config(config.train)
    split = build.load_split(train_config(config, "tone", corpus), config.extract.split, model_config)
    return log_mel_at_frames(split.source, store.table, frame_stride=model_config.frame_stride,
                             receptive_field=model_config.receptive_field)


def summary_text(result: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    """What a terminal shows at the end: accuracy, top-layer SVCCA, claims, the report's path."""
    split = config.extract.split
    return "\n".join([
        "", f"Frame accuracy ({split} split):", tables.accuracy_table(result["accuracy"], split),
        "", "SVCCA against the labels, mean of the top layers:",
        tables.svcca_summary(result["scores"], config.claims.top_fraction),
        "", "The paper's claims (95% speaker-bootstrap intervals):",
        markdown_table(CLAIMS_HEADER, claims_table(result["claims"])), "", f"Report: {result['report']}"])


def run_and_print(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """`run` with its stages and summary on the terminal (the launch entry points)."""
    result = run(config, workdir, say=print)
    print(summary_text(result, config))
    return result
