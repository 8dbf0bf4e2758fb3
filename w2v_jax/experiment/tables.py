"""The experiment's tables: test accuracy, top-layer SVCCA, and what the terminal shows at the end."""

from __future__ import annotations

import csv
import io

import numpy as np

from w2v_jax import files
from w2v_jax.analysis.claims import LABEL_SETS, top_layers
from w2v_jax.analysis.report import markdown_table


def test_accuracy(metrics: dict, task: str, split: str) -> float | None:
    return metrics.get(f"{split}/{task}/accuracy")


def accuracy_table(accuracy: dict[str, dict], split: str) -> str:
    """One row per fine-tuned model, with the checkpoint step it was measured at."""
    rows = [[model, m.get("step", "—"),
             *(f"{a:.3f}" if (a := test_accuracy(m, t, split)) is not None else "—"
               for t in LABEL_SETS)] for model, m in accuracy.items()]
    return markdown_table(["model", "checkpoint step", *LABEL_SETS], rows)


def write_accuracy(accuracy: dict[str, dict], out_dir: files.PathLike, split: str) -> None:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["model", "step", "task", "accuracy", "frames"])
    for model, m in accuracy.items():
        for task in LABEL_SETS:
            if test_accuracy(m, task, split) is not None:
                writer.writerow([model, m.get("step"), task, f"{test_accuracy(m, task, split):.4f}",
                                 m.get(f"{split}/{task}/frames")])
    files.write_text(files.path(out_dir) / "accuracy.csv", table.getvalue())


def svcca_summary(scores: dict, top_fraction: float) -> str:
    """Markdown: mean SVCCA over the top layers, per model and label set."""
    def top_mean(by: dict, label: str) -> str:
        if "svcca" not in by.get(label, {}):  # not scored (the report says why)
            return "—"
        values = np.asarray(by[label]["svcca"])
        return f"{values[top_layers(len(values), top_fraction)].mean():.3f}"
    rows = [[model, *(top_mean(by, ls) for ls in LABEL_SETS)] for model, by in scores.items()]
    return markdown_table(["model", *(f"{ls} (top layers)" for ls in LABEL_SETS)], rows)


def setup_text(config, corpus: str) -> str:
    t = config.train
    kind = ("corpus" if config.train.data.dir else
            {"espeak": "eSpeak NG Mandarin corpus (w2v_jax/data/espeak.py)",
             "formant": "formant-synthesiser toy corpus (w2v_jax/data/synthetic.py)"}[config.corpus.generator])
    phase2 = "all but the CNN" if t.freeze_feature_encoder else "the whole model"
    return (f"Backbone: {backbone_text(t)}. Corpus: {kind} `{corpus}`. Fine-tuned "
            f"{t.freeze_steps} steps heads only, then {phase2} to {t.total_steps} steps; "
            f"embeddings of the `{config.extract.split}` split at the central frame of every "
            "phone.\n")


def backbone_text(t) -> str:
    """Which model the fine-tunings start from, and how it was pre-trained where it says."""
    if t.init == "random":
        return f"random initialisation (preset {t.model.preset}, seed {t.seed}), not pre-trained"
    directory = t.init.partition(":")[2]
    record = files.path(directory) / "training.json"
    if not record.exists():
        return f"`{t.init}`"
    r = files.read_json(record)
    last = r["last_train"] or {}
    return (f"`{t.init}`, pre-trained (self-supervised) for {last.get('step', '?')} updates on "
            f"{r['data']['train']['hours']} h of audio ({r['data']['train']['files']} files; "
            f"`{record}`)")
