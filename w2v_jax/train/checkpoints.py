"""Run checkpoints with orbax: state, data-iterator position and run metadata, saved asynchronously.

    WORKDIR/checkpoints/<step>/state   the train state (params, optimizer, step, RNG)
    WORKDIR/checkpoints/<step>/data    the train iterator's JSON state
    WORKDIR/checkpoints/<step>/meta    fingerprint, config fields, the phase

Kept: the latest `keep_checkpoints` and the best by the dev metric.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from w2v_jax import files
from w2v_jax.models import ConfigError
from w2v_jax.train.config import fingerprint, fingerprint_fields

CHECKPOINT_DIR = "checkpoints"
SCORE = "score"
CONFIG_FILE = "config.json"  # {"fingerprint", "config"}: the resolved config a run saved


def has_checkpoint(workdir: files.PathLike) -> bool:
    """Whether `workdir` holds a finished checkpoint (read without opening a manager, which creates it)."""
    saved = files.path(workdir) / CHECKPOINT_DIR
    return saved.is_dir() and any(p.name.isdigit() for p in saved.iterdir())


def run_config(workdir: files.PathLike) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir."""
    return ml_collections.ConfigDict(files.read_json(files.path(workdir) / CONFIG_FILE)["config"])


class Checkpoints:
    def __init__(self, workdir: files.PathLike, config: ml_collections.ConfigDict, *, read_only: bool = False):
        policies = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=config.keep_checkpoints),
            checkpoint_managers.BestN(get_metric_fn=lambda m: m[SCORE], n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        # best_fn adds nothing to the policy; without it orbax writes no score to disk, so a
        # reopened run (resume, export "best") saw no best and the policy then dropped it.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies, best_fn=lambda m: m[SCORE], best_mode="max",
            enable_async_checkpointing=config.async_checkpoints,
            create=not read_only, cleanup_tmp_directories=not read_only, read_only=read_only)
        self.directory = files.absolute(workdir) / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.fingerprint = fingerprint(config)
        self.fields = fingerprint_fields(config)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        scored = [(m[SCORE], s) for s in self.manager.all_steps()
                  if (m := self.manager.metrics(s)) is not None]
        return max(scored)[1] if scored else None

    def save(self, step: int, state: Any, data_state: dict, meta: dict,
             score: float | None = None) -> None:
        meta = {**meta, "step": step, "fingerprint": self.fingerprint, "config": self.fields}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta)),
            metrics=None if score is None else {SCORE: score}, force=True)

    def meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def check_resumable(self, step: int, allow_change: bool) -> dict:
        """The checkpoint's metadata; ConfigError naming the differing keys if another experiment wrote it."""
        meta = self.meta(step)
        if meta["fingerprint"] != self.fingerprint and not allow_change:
            saved = meta["config"]
            keys = sorted(k for k in set(saved) | set(self.fields) if saved.get(k) != self.fields.get(k))
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {self.fields.get(k)!r}" for k in keys[:8])
            raise ConfigError(f"{self.directory} holds step {step} of another experiment ({changes}); "
                              "use another workdir, or set config.allow_config_change=True to resume it")
        return meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """(state placed as abstract_state's shardings say, data-iterator state)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the shardings to restore into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
