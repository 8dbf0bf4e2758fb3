"""The training loop: resume or start, two phases, logging, evaluation, checkpoints, stops.

    from w2v_jax.train import default_config, train
    config = default_config(); config.data.dir = "corpus"; ...
    summary = train(config, "runs/tone")
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from w2v_jax import checkpoint, data, sharding
from w2v_jax.files import write_json
from w2v_jax.data import labels as L
from w2v_jax.models import ConfigError
from w2v_jax.train import build, optim
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import CHECKPOINT_DIR, Checkpoints, abstract
from w2v_jax.train.config import SCORES, fingerprint, resolve_config
from w2v_jax.train.export import BACKBONE_CONFIG_FILE, CONFIG_FILE, run_backbone_config
from w2v_jax.train.metrics import MetricWriter, summarize_confusion

INVENTORIES_FILE = "inventories.json"
BACKBONE_DIR = "backbone"


class PreemptionWatch:
    """True at the step where every process should save and stop after a SIGTERM."""

    def __init__(self):
        self.multihost = jax.process_count() > 1
        self.requested = False
        if not self.multihost:  # multi-host: jax's preemption service syncs the step
            self._previous = signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint and stopping")
        self.requested = True

    def reached(self, step: int) -> bool:
        if self.multihost:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def close(self) -> None:
        if not self.multihost:
            signal.signal(signal.SIGTERM, self._previous)


def _write_run_files(workdir: str, config: ml_collections.ConfigDict, model_config) -> None:
    files = {CONFIG_FILE: {"fingerprint": fingerprint(config), "config": config.to_dict()},
             BACKBONE_CONFIG_FILE: model_config.to_dict(), INVENTORIES_FILE: L.inventories()}
    for name, value in files.items():  # replaced whole: other processes of a resume read them
        write_json(os.path.join(workdir, name), value)


def _check_init_exists(config: ml_collections.ConfigDict, workdir: str) -> None:
    """A new run needs its init checkpoint; a resumed one does not (the workdir holds it)."""
    saved = os.path.join(workdir, CHECKPOINT_DIR)
    if config.init == "random" or (os.path.isdir(saved) and any(n.isdigit() for n in os.listdir(saved))):
        return
    directory = config.init.partition(":")[2]
    if not os.path.isdir(directory):
        raise ConfigError(f"config.init={config.init!r}: no such directory")


def _resolve_backbone_config(config: ml_collections.ConfigDict, workdir: str, resuming: bool):
    """The backbone's architecture: from config.init for a new run, from the workdir for a
    resumed one, since config.init may be gone. Runs older than the workdir file read config.init."""
    if resuming and os.path.exists(os.path.join(workdir, BACKBONE_CONFIG_FILE)):
        return build.with_switches(run_backbone_config(workdir), config)
    return build.backbone_config(config)


def _per_process(global_size: int, what: str, mesh) -> int:
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_size % jax.process_count() or global_size % shards:
        raise ValueError(f"config.{what}={global_size}: must divide by the process count "
                         f"({jax.process_count()}) and by mesh data x fsdp ({shards})")
    return global_size // jax.process_count()


def _global_batch(micro_batches: list[dict], tasks, model_config, batch_sharding) -> dict:
    """Stack micro-batches as (accum, batch, ...), padded to the longest, as global arrays."""
    samples = max(b["input_values"].shape[1] for b in micro_batches)
    frames = int(model_config.num_frames(samples))

    def pad(x, width, value):
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=value)

    local = {"input_values": np.stack([pad(b["input_values"], samples, 0) for b in micro_batches]),
             "attention_mask": np.stack([pad(b["attention_mask"], samples, 0) for b in micro_batches])}
    for task in tasks:
        local[f"labels/{task}"] = np.stack([pad(b[f"labels/{task}"], frames, L.IGNORE)
                                            for b in micro_batches])
    return {k: jax.make_array_from_process_local_data(
        batch_sharding, v, (v.shape[0], v.shape[1] * jax.process_count(), *v.shape[2:]))
        for k, v in local.items()}


def evaluate(eval_step, state: dict, split: data.DatasetSplit, config: ml_collections.ConfigDict,
             model_config, mesh) -> dict[str, Any]:
    """Dev metrics: per task frame accuracy, per-class accuracy, confusion; and their task mean."""
    tasks = tuple(config.tasks)
    batches = data.Batches(split, model_config, batch_size=_per_process(config.data.eval_batch_size,
                                                                        "data.eval_batch_size", mesh),
                           train=False, tasks=tasks, process_index=jax.process_index(),
                           process_count=jax.process_count(), num_buckets=config.data.num_buckets)
    batch_sharding = sharding.batch_sharding(mesh)
    confusion = {task: 0 for task in tasks}
    try:
        for i, batch in enumerate(batches):
            if config.max_eval_batches and i >= config.max_eval_batches:
                break
            arrays = {k: jax.make_array_from_process_local_data(
                batch_sharding, batch[k], (batch[k].shape[0] * jax.process_count(), *batch[k].shape[1:]))
                for k in (*S.BATCH_KEYS, *(f"labels/{t}" for t in tasks))}
            counts = jax.device_get(eval_step(state["params"], state["rng"], arrays))
            confusion = {task: confusion[task] + counts[task] for task in tasks}
    finally:
        batches.close()
    metrics: dict[str, Any] = {}
    for task in tasks:
        for name, value in summarize_confusion(confusion[task]).items():
            metrics[f"dev/{task}/{name}"] = value
    for score in SCORES:  # the task means, which config.best_metric may name too
        metrics[f"dev/{score}"] = float(np.mean([metrics[f"dev/{t}/{score}"] for t in tasks]))
    return metrics


def _mean_train_metrics(window: list[dict]) -> dict[str, float]:
    finite = [m for m in window if m["finite"]] or window
    keys = [k for k in finite[0] if k not in ("finite", "learning_rate")]
    out = {f"train/{k}": float(np.mean([m[k] for m in finite])) for k in keys}
    out["train/learning_rate"] = float(window[-1]["learning_rate"])
    return out


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train (or resume) the run in `workdir`; returns {"step", "stopped", "dev"}.

    `stopped` is "done", "preempted" (SIGTERM) or "nonfinite" (max_nonfinite in a row).
    """
    config = resolve_config(config)  # checked, paths absolute, data.dir found: before any write
    mesh = sharding.make_mesh(**config.mesh)
    tasks = tuple(config.tasks)
    batch_size = _per_process(config.data.batch_size, "data.batch_size", mesh)
    primary = jax.process_index() == 0
    _check_init_exists(config, workdir)
    os.makedirs(workdir, exist_ok=True)

    checkpoints = Checkpoints(workdir, config)
    start = checkpoints.latest_step()
    meta = checkpoints.check_resumable(start, config.allow_config_change) if start is not None else {}
    model_config = _resolve_backbone_config(config, workdir, resuming=start is not None)
    train_split = build.load_split(config, config.data.train_split, model_config)
    eval_split = build.load_split(config, config.data.eval_split, model_config)
    if primary:
        _write_run_files(workdir, config, model_config)
    batches = data.Batches(train_split, model_config, batch_size=batch_size, train=True,
                           seed=config.seed, tasks=tasks, process_index=jax.process_index(),
                           process_count=jax.process_count(), num_buckets=config.data.num_buckets)

    graphdef, params, rng = S.split_model(build.abstract_model(config, model_config))
    abstract_state = jax.eval_shape(lambda: S.initial_state(params, rng, config))
    if start is None:
        _, params, rng = S.split_model(build.build_model(config, model_config))
        state = S.initial_state(params, rng, config)
        state = S.place(state, S.state_shardings(state, mesh))
    else:
        if "backbone" in meta["groups"]:
            abstract_state = jax.eval_shape(lambda s: S.with_backbone_opt(s, config), abstract_state)
        state, data_state = checkpoints.restore(
            start, abstract(abstract_state, S.state_shardings(abstract_state, mesh)))
        batches.set_state(data_state)
        logging.info("resumed %s at step %d", workdir, start)

    shardings = S.state_shardings(state, mesh)
    to_phase2 = jax.jit(lambda s: S.with_backbone_opt(s, config), donate_argnums=0,
                        out_shardings=S.state_shardings(
                            jax.eval_shape(lambda s: S.with_backbone_opt(s, config), state), mesh))
    train_steps: dict[tuple[str, ...], Any] = {}
    eval_step = S.jit_eval_step(graphdef, tasks, mesh, shardings["params"], shardings["rng"])
    batch_sharding = S.batch_shardings(mesh)

    writer = MetricWriter(workdir, active=primary)
    preemption = PreemptionWatch()
    step = int(jax.device_get(state["step"]))
    streak, nonfinite_total = meta.get("nonfinite_streak", 0), meta.get("nonfinite_total", 0)
    stopped, dev, window = "done", {}, []
    bar = tqdm(total=config.total_steps, initial=step, disable=not primary, desc="train",
               dynamic_ncols=True)
    last_log = time.time()

    def save(score=None):
        checkpoints.save(step, state, batches.get_state(),
                         {"groups": list(S.groups_of(state)), "nonfinite_streak": streak,
                          "nonfinite_total": nonfinite_total}, score)

    try:
        while step < config.total_steps:
            groups = optim.phase_groups(step, config.freeze_steps)
            if groups != S.groups_of(state):
                logging.info("step %d: phase 2, training %s", step, "+".join(groups))
                state = to_phase2(state)
            if groups not in train_steps:
                train_steps[groups] = S.jit_train_step(graphdef, config, groups, mesh,
                                                       S.state_shardings(state, mesh))
            batch = _global_batch([next(batches) for _ in range(config.optimizer.grad_accum)],
                                  tasks, model_config, batch_sharding)
            state, metrics = train_steps[groups](state, batch)
            step += 1
            metrics = jax.device_get(metrics)
            window.append(metrics)
            streak = 0 if metrics["finite"] else streak + 1
            nonfinite_total += 0 if metrics["finite"] else 1
            if not metrics["finite"]:
                logging.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)",
                                step, streak)
            bar.update(1)
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", phase=len(groups))

            if step % config.log_every == 0 or step == config.total_steps:
                now = time.time()
                writer.write(step, {**_mean_train_metrics(window), "train/nonfinite_total": nonfinite_total,
                                    "train/steps_per_sec": len(window) / (now - last_log)})
                window, last_log = [], now
            score = None
            if step % config.eval_every == 0 or step == config.total_steps:
                dev = evaluate(eval_step, state, eval_split, config, model_config, mesh)
                writer.write(step, dev)
                score = dev["dev/" + config.best_metric]
                logging.info("step %d: dev %s", step, {k: round(v, 4) for k, v in dev.items()
                                                       if k.endswith("accuracy") and isinstance(v, float)})
            if streak >= config.max_nonfinite:
                stopped = "nonfinite"
            elif preemption.reached(step):
                stopped = "preempted"
            if stopped != "done" or step % config.checkpoint_every == 0 or step == config.total_steps:
                save(score)
            if stopped != "done":
                logging.warning("stopping at step %d (%s)", step, stopped)
                break
        checkpoints.wait()
        if stopped == "done" and jax.process_count() == 1:
            export_final(state, graphdef, workdir)
        elif stopped == "done":
            logging.info("multi-host run: export the backbone from one host with export_backbone()")
    finally:
        bar.close()
        preemption.close()
        batches.close()
        writer.close()
        checkpoints.close()
    return {"step": step, "stopped": stopped, "dev": dev}


def export_final(state: dict, graphdef, workdir: str) -> None:
    """The fine-tuned backbone as a model directory (checkpoint.load_model reads it)."""
    from flax import nnx
    target = os.path.join(workdir, BACKBONE_DIR)
    if os.path.exists(target):
        logging.info("%s exists; not exporting again", target)
        return
    model = nnx.merge(graphdef, state["params"], state["rng"])
    checkpoint.save_model(model.wav2vec2, target)
    logging.info("exported the fine-tuned backbone to %s", target)
