"""What an objective gives the training loop (w2v_jax.train.loop.run), and nothing more.

The loop owns the mesh, the train state, phases, accumulation, checkpoints, resume, logging,
evaluation cadence and stops; a Task owns its model, data, loss, metrics and export. The
fine-tuning heads (w2v_jax.train.finetune.FineTuning) are the first Task.

Batches are dicts of numpy arrays whose leading axis is the batch (host-local rows). The
train step gets them stacked as (grad_accum, batch, ...). Everything the loss and eval step do
runs under jit; everything else runs on the host.

Accumulation averages over every frame of the accumulated batch: `normalizers(batch)` sees all
grad_accum micro-batches at once and returns the counts to divide by (frames with a label,
masked frames...); `loss` returns each micro-batch's share of the mean, its sums divided by those
counts, so the shares add up to the mean over the whole batch. Train metrics are shares too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx

Batch = Mapping[str, np.ndarray]


class TrainBatches(Protocol):
    """An endless iterator of host-local micro-batches whose position is part of a checkpoint."""

    def __next__(self) -> Batch: ...
    def get_state(self) -> dict: ...  # JSON-serialisable; set_state(get_state()) resumes exactly
    def set_state(self, state: dict) -> None: ...
    def close(self) -> None: ...


class Task(Protocol):
    config: ml_collections.ConfigDict
    """Checked and resolved. The loop reads the keys of train.config.default_config() that are
    not about the objective: seed, total_steps, mesh, data.batch_size, data.eval_batch_size,
    optimizer.*, the cadences, keep/async checkpoints, max_nonfinite, max_eval_batches,
    allow_config_change. The whole config is the run's fingerprint."""

    num_phases: int

    def prepare(self, workdir: str, resuming: bool) -> None:
        """Resolve what the run needs (architecture, data). Called before the workdir is written:
        raise here on bad input (a resumed run may read the files run_files wrote)."""

    def run_files(self) -> dict[str, Any]:
        """{file name: JSON value} the first process writes into the workdir (besides config.json)."""

    def build_model(self, *, abstract: bool) -> nnx.Module:
        """The model, holding only nnx.Param and nnx.RngState variables; abstract=True computes
        and reads no weights (nnx.eval_shape). Each Param declares its logical axes."""

    def phase(self, step: int) -> int:
        """The phase (0 .. num_phases - 1) of the update made at `step`; never decreasing."""

    def groups(self, phase: int) -> tuple[str, ...]:
        """The optimizer groups `phase` trains (each has its own Adam state)."""

    def param_label(self, path: tuple[str, ...], phase: int) -> str:
        """The group of the parameter at `path` in `phase`, or optim.FROZEN."""

    def train_batches(self, batch_size: int) -> TrainBatches:
        """This process's micro-batches of `batch_size` rows, seeded by config.seed."""

    def stack(self, micro_batches: list[Batch]) -> dict[str, np.ndarray]:
        """grad_accum micro-batches as one (grad_accum, batch, ...) batch (pad to a common shape)."""

    def normalizers(self, batch: dict[str, jax.Array]) -> Any:
        """(jit) The counts the loss divides by, over the whole (grad_accum, batch, ...) batch."""

    def loss(self, model: nnx.Module, batch: dict[str, jax.Array], normalizers: Any,
             step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(jit) This micro-batch's share of the loss, and of each train metric (see above).
        `step` is the global update step (for schedules such as a Gumbel temperature)."""

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """One pass over the dev split in this process's rows (a generator: the loop closes it)."""

    def eval_stats(self, model: nnx.Module, batch: dict[str, jax.Array]) -> Any:
        """(jit) Additive statistics of one eval batch (counts, sums): the loop adds them up."""

    def summarize(self, stats: Any) -> dict[str, Any]:
        """Dev metrics ("dev/..." keys) from the summed statistics of the eval split."""

    def score(self, dev: Mapping[str, Any]) -> float:
        """The best-checkpoint score from summarize's metrics: higher is better."""

    def export(self, model: nnx.Module, workdir: str) -> None:
        """Called once at the end of a finished single-process run with the model of the best
        checkpoint by `score` (the final model when no checkpoint has a dev score)."""


def labels_of(task: Task, phase: int) -> Callable[[Any], Any]:
    """params -> the same tree holding each parameter's group (what optax.partition takes)."""
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: task.param_label(param_path(path), phase), params)


def param_path(path) -> tuple[str, ...]:
    """A parameter's path as names ('wav2vec2', 'encoder', ...), from a jax or nnx key path."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):  # an nnx Variable's .value
            continue
        key = key.key if hasattr(key, "key") else getattr(key, "idx", key)
        names.append(str(key))
    return tuple(names)
