"""Periodic work after a train step, in the manner of clu.periodic_actions: each action decides
from the step whether it runs, so the loop body only calls them in order.

An action is called as action(step, metrics, last=..., stopping=...): `last` at the final step
of the run, `stopping` when the run stops early (preemption, non-finite steps).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np


class Every:
    """callback(step) every `every` steps, at the last step, and (if on_stop) when stopping early."""

    def __init__(self, every: int, callback: Callable[[int], Any], *, on_stop: bool = False):
        self.every, self.callback, self.on_stop = every, callback, on_stop

    def __call__(self, step: int, metrics: dict, *, last: bool, stopping: bool) -> None:
        if step % self.every == 0 or last or (stopping and self.on_stop):
            self.callback(step)


class TrainLog:
    """Every `every` steps (and at the last): the mean train metrics of the finite steps since
    the previous write (all steps if none was finite), the latest learning rate and counters."""

    def __init__(self, every: int, write: Callable[[int, dict], None]):
        self.every, self.write = every, write
        self.window: list[dict] = []
        self.since = time.time()

    def __call__(self, step: int, metrics: dict, *, last: bool, stopping: bool) -> None:
        self.window.append(metrics)
        if step % self.every and not last:
            return
        finite = [m for m in self.window if m["finite"]] or self.window
        counters = ("finite", "learning_rate", "nonfinite_streak", "nonfinite_total")
        out = {f"train/{k}": float(np.mean([m[k] for m in finite])) for k in finite[0]
               if k not in counters}
        now = time.time()
        out.update({"train/learning_rate": float(metrics["learning_rate"]),
                    "train/nonfinite_total": int(metrics["nonfinite_total"]),
                    "train/steps_per_sec": len(self.window) / (now - self.since)})
        self.write(step, out)
        self.window, self.since = [], now
