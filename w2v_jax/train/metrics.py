"""Dev metrics from confusion matrices, and the metric writers (JSON lines + TensorBoard)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def summarize_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """Frame accuracy, per-class accuracy (NaN for a class with no frames) and the matrix."""
    confusion = np.asarray(confusion, np.int64)
    per_class_total = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / per_class_total
    total = confusion.sum()
    return {"accuracy": float(np.trace(confusion) / total) if total else float("nan"),
            "class_accuracy": [None if np.isnan(a) else float(a) for a in per_class],
            "frames": int(total), "confusion": confusion.tolist()}


class MetricWriter:
    """Appends {"step", "time", <name>: value} lines to WORKDIR/metrics.jsonl; scalars also to TensorBoard.

    Only the first process writes.
    """

    def __init__(self, workdir: str, *, active: bool):
        self.active = active
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tensorboard = None
        if active:
            from tensorboardX import SummaryWriter
            self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), "time": time.time(), **metrics}) + "\n")
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
