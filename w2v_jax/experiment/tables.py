"""The experiment's tables: test accuracy, top-layer SVCCA, and what the terminal shows at the end."""

from __future__ import annotations

import csv
import os
from typing import Any

import ml_collections
import numpy as np

from w2v_jax.analysis.report import markdown_table

PRETRAINED = "pretrained"
LABEL_SETS = ("tone", "final", "sex")


def test_accuracy(metrics: dict, task: str, split: str) -> float | None:
    return metrics.get(f"{split}/{task}/accuracy")


def top_mean(values: np.ndarray, top_fraction: float) -> float:
    """Mean over the top `top_fraction` of the layers (at least one)."""
    values = np.asarray(values)
    k = max(1, int(round(len(values) * top_fraction)))
    return float(values[-k:].mean())



def test_accuracy(metrics: dict, task: str, split: str) -> float | None:
    return metrics.get(f"{split}/{task}/accuracy")


def accuracy_table(accuracy: dict[str, dict], split: str) -> str:
    """One row per fine-tuned model, with the checkpoint step it was measured at."""
    rows = [[model, m.get("step", "—"),
             *(f"{a:.3f}" if (a := test_accuracy(m, t, split)) is not None else "—"
               for t in LABEL_SETS)] for model, m in accuracy.items()]
    return markdown_table(["model", "checkpoint step", *LABEL_SETS], rows)


def write_accuracy(accuracy: dict[str, dict], out_dir: str, split: str) -> None:
    with open(os.path.join(out_dir, "accuracy.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "step", "task", "accuracy", "frames"])
        for model, m in accuracy.items():
            for task in LABEL_SETS:
                if test_accuracy(m, task, split) is not None:
                    writer.writerow([model, m.get("step"), task, f"{test_accuracy(m, task, split):.4f}",
                                     m.get(f"{split}/{task}/frames")])


def svcca_summary(scores: dict, top_fraction: float) -> str:
    """Markdown: mean SVCCA over the top layers, per model and label set."""
    rows = [[model, *(f"{top_mean(by[ls]['svcca'], top_fraction):.3f}" if ls in by else "—"
                      for ls in LABEL_SETS)] for model, by in scores.items()]
    return markdown_table(["model", *(f"{ls} (top layers)" for ls in LABEL_SETS)], rows)


def setup_text(config, corpus: str) -> str:
    t = config.train
    kind = ("corpus" if config.train.data.dir else
            {"espeak": "eSpeak NG Mandarin corpus (w2v_jax/data/espeak.py)",
             "formant": "formant-synthesiser toy corpus (w2v_jax/data/synthetic.py)"}[config.corpus.generator])
    return (f"Backbone `{t.init}`" + (f" (preset {t.model.preset}, seed {t.seed})" if t.init == "random" else "")
            + f"; {kind} `{corpus}`; fine-tuned {t.freeze_steps} steps heads-only then to "
            f"{t.total_steps} steps; embeddings of the `{config.extract.split}` split at the "
            "central frame of every phone.\n")
