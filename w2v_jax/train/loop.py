"""The training loop of any Task (w2v_jax.train.task): start or resume, phases, periodic work, stops.

    from w2v_jax.train import default_config, train      # the fine-tuning task
    summary = train(config, "runs/tone")
    summary = run(MyTask(config), "runs/mine")             # any other objective
"""

from __future__ import annotations

import signal
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from w2v_jax import files, sharding
from w2v_jax.train import distributed
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import CONFIG_FILE, Checkpoints, abstract, has_checkpoint
from w2v_jax.train.config import fingerprint
from w2v_jax.train.metrics import MetricWriter
from w2v_jax.train.periodic import Every, TrainLog
from w2v_jax.train.task import Task


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


def per_process(global_size: int, what: str, mesh: Mesh) -> int:
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_size % jax.process_count() or global_size % shards:
        raise ValueError(f"config.{what}={global_size}: must divide by the process count "
                         f"({jax.process_count()}) and by mesh data x fsdp ({shards})")
    return global_size // jax.process_count()


def global_arrays(local: dict[str, np.ndarray], where, batch_axis: int) -> dict[str, jax.Array]:
    """Host-local rows as global arrays: the processes' rows concatenated along `batch_axis`."""
    def one(v):
        shape = list(v.shape)
        shape[batch_axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(where, v, tuple(shape))
    return {k: one(v) for k, v in local.items()}


class DeviceBatches:
    """Train batches stacked for accumulation and placed on the devices: `load` the next one
    while the current step runs. get_state() is the train iterator's position before a loaded
    batch, so a checkpoint after step N resumes at batch N + 1 whether it was loaded or not."""

    def __init__(self, task: Task, batches, grad_accum: int, where):
        self.task, self.batches, self.grad_accum, self.where = task, batches, grad_accum, where
        self._loaded = None  # (the iterator's state before it, the batch)

    def load(self) -> None:
        position = self.batches.get_state()
        batch = self.task.stack([next(self.batches) for _ in range(self.grad_accum)])
        self._loaded = position, global_arrays(batch, self.where, 1)

    def __next__(self) -> dict[str, jax.Array]:
        if self._loaded is None:
            self.load()
        batch, self._loaded = self._loaded[1], None
        return batch

    def get_state(self) -> dict:
        return self._loaded[0] if self._loaded is not None else self.batches.get_state()


def evaluate(task: Task, eval_step, state: dict, mesh: Mesh) -> dict[str, Any]:
    """The task's dev metrics from its eval statistics summed over the eval split."""
    where = sharding.batch_sharding(mesh)
    batches = task.eval_batches(per_process(task.config.data.eval_batch_size,
                                            "data.eval_batch_size", mesh))
    total = None
    try:
        for i, batch in enumerate(batches):
            if task.config.max_eval_batches and i >= task.config.max_eval_batches:
                break
            stats = jax.device_get(eval_step(state["params"], state["rng"],
                                             global_arrays(batch, where, 0)))
            total = stats if total is None else jax.tree.map(np.add, total, stats)
    finally:
        batches.close()
    return task.summarize(total)


class Checkpointing:
    """Saves the state, the data position and the phase, scored by the latest evaluation."""

    def __init__(self, checkpoints: Checkpoints, batches, evaluation: "Evaluation"):
        self.checkpoints, self.batches, self.evaluation = checkpoints, batches, evaluation
        self.state, self.phase = None, 0

    def __call__(self, step: int) -> None:
        scored = self.evaluation.step == step
        self.checkpoints.save(step, self.state, self.batches.get_state(), {"phase": self.phase},
                              self.evaluation.score if scored else None)


class Evaluation:
    def __init__(self, task: Task, eval_step, mesh: Mesh, writer: MetricWriter):
        self.task, self.eval_step, self.mesh, self.writer = task, eval_step, mesh, writer
        self.state, self.step, self.dev, self.score = None, None, {}, None

    def __call__(self, step: int) -> None:
        self.dev = evaluate(self.task, self.eval_step, self.state, self.mesh)
        self.writer.write(step, self.dev)
        self.step, self.score = step, self.task.score(self.dev)
        logging.info("step %d: dev %s", step, {k: round(v, 4) for k, v in self.dev.items()
                                               if isinstance(v, float)})


def run(task: Task, workdir: files.PathLike) -> dict[str, Any]:
    """Train (or resume) `task` in `workdir`; returns {"step", "stopped", "dev"}.

    `stopped` is "done", "preempted" (SIGTERM) or "nonfinite" (max_nonfinite in a row).
    """
    config = task.config
    mesh = sharding.make_mesh(**config.mesh)
    primary = jax.process_index() == 0
    task.prepare(workdir, resuming=has_checkpoint(workdir))  # bad input fails before any write
    files.path(workdir).mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir, config)
    start = checkpoints.latest_step()
    meta = checkpoints.check_resumable(start, config.allow_config_change) if start is not None else {}
    if primary:  # replaced whole: other processes of a resume read them
        run_files = {CONFIG_FILE: {"fingerprint": fingerprint(config), "config": config.to_dict()},
                     **task.run_files()}
        for name, value in run_files.items():
            files.write_json(files.path(workdir) / name, value)

    phases = S.Phases(task)
    phase = meta.get("phase", task.phase(0))
    graphdef, abstract_state = phases.abstract_state(phase)
    shardings = sharding.state_shardings(abstract_state, mesh)
    batches = task.train_batches(per_process(config.data.batch_size, "data.batch_size", mesh))
    if start is None:
        _, params, rng = S.split_model(task.build_model(abstract=False))
        state = S.place(phases.initial_state(params, rng, phase), shardings)
    else:
        state, data_state = checkpoints.restore(start, abstract(abstract_state, shardings))
        batches.set_state(data_state)
        logging.info("resumed %s at step %d", workdir, start)

    writer = MetricWriter(workdir, active=primary, start_step=start or 0)
    evaluation = Evaluation(task, S.jit_eval_step(graphdef, task, mesh, shardings["params"],
                                                  shardings["rng"]), mesh, writer)
    batch_sharding, train_steps, stopped = S.batch_shardings(mesh), {}, "done"
    device_batches = DeviceBatches(task, batches, config.optimizer.grad_accum, batch_sharding)
    saving = Checkpointing(checkpoints, device_batches, evaluation)
    step = int(jax.device_get(state["step"]))
    bar = tqdm(total=config.total_steps, initial=step, disable=not primary, desc="train",
               dynamic_ncols=True)
    actions = [TrainLog(config.log_every, writer.write),
               lambda step, metrics, **_: (bar.update(1), bar.set_postfix(
                   loss=f"{float(metrics['loss']):.4f}", phase=saving.phase)),
               Every(config.eval_every, evaluation), Every(config.checkpoint_every, saving, on_stop=True)]
    preemption = PreemptionWatch()
    try:
        while step < config.total_steps and stopped == "done":
            if task.phase(step) != phase:
                phase = task.phase(step)
                logging.info("step %d: phase %d, training %s", step, phase, "+".join(task.groups(phase)))
                entered = jax.eval_shape(lambda s: phases.enter(s, phase), state)
                state = jax.jit(lambda s: phases.enter(s, phase), donate_argnums=0,
                                out_shardings=sharding.state_shardings(entered, mesh))(state)
            if phase not in train_steps:
                train_steps[phase] = S.jit_train_step(graphdef, task, phase, phases.optimizers[phase],
                                                      mesh, sharding.state_shardings(state, mesh))
            state, metrics = train_steps[phase](state, next(device_batches))
            if step + 1 < config.total_steps:
                device_batches.load()  # on the host while the devices run the step
            step, metrics = step + 1, jax.device_get(metrics)
            if not metrics["finite"]:
                logging.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)",
                                step, metrics["nonfinite_streak"])
            stopped = ("nonfinite" if metrics["nonfinite_streak"] >= config.max_nonfinite else
                       "preempted" if preemption.reached(step) else "done")
            evaluation.state = saving.state = state
            saving.phase = phase
            for action in actions:
                action(step, metrics, last=step == config.total_steps, stopping=stopped != "done")
        if stopped != "done":
            logging.warning("stopped at step %d (%s)", step, stopped)
        checkpoints.wait()
        if stopped == "done":  # every process: the export is collective
            best = checkpoints.best_step()
            if best is not None and best != step:  # export what evaluation and extraction use
                best_state = phases.abstract_state(checkpoints.meta(best)["phase"])[1]
                state, _ = checkpoints.restore(
                    best, abstract(best_state, sharding.state_shardings(best_state, mesh)))
                logging.info("exporting the best checkpoint by dev score: step %d", best)
            task.export(nnx.merge(graphdef, state["params"], state["rng"]), workdir)
    except BaseException as error:
        if jax.process_count() > 1:  # another process may be gone: waiting on it would hang
            distributed.exit_without_peers(error)
        raise
    finally:
        bar.close()
        preemption.close()
        batches.close()
        writer.close()
        checkpoints.close()
    return {"step": step, "stopped": stopped, "dev": evaluation.dev}
