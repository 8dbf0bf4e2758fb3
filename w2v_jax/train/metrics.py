"""Dev metrics from confusion matrices, and the metric writers (JSON lines + TensorBoard)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import numpy as np

from w2v_jax import files

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

    Only the first process writes. A run that starts at `start_step` (the restored checkpoint's
    step, 0 for a new run) first drops what an interrupted process logged after that step, so
    that each step appears once: metrics.jsonl is rewritten without those lines, and TensorBoard
    is told to hide the older events from step start_step + 1 on (its purge step). An object
    store cannot append, so there the file is uploaded whole after each write.
    """

    def __init__(self, workdir: files.PathLike, *, active: bool, start_step: int = 0):
        self.active = active
        self.path = files.path(workdir) / METRICS_FILE
        self._tensorboard = None
        self._lines: list[str] = []  # the file's lines, kept where it cannot be appended to
        if active:
            from tensorboardX import SummaryWriter
            self._drop_after(start_step)
            self._tensorboard = SummaryWriter(os.fspath(files.path(workdir) / TENSORBOARD_DIR),
                                              purge_step=start_step + 1)

    def _drop_after(self, step: int) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        # A line cut short by a kill is dropped too: it parses as no step.
        kept = [line for line in lines if (logged := _step(line)) is not None and logged <= step]
        if not files.is_local(self.path):
            self._lines = kept
        if len(kept) < len(lines):
            files.write_text(self.path, "".join(kept))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        line = json.dumps({"step": int(step), "time": time.time(), **metrics}) + "\n"
        if files.is_local(self.path):
            with self.path.open("a") as f:
                f.write(line)
        else:
            self._lines.append(line)
            files.write_text(self.path, "".join(self._lines))
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tensorboard.add_scalar(name, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
