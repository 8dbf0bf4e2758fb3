"""A fine-tuning run's checkpoints after training: restore a model, export its backbone, evaluate it."""

from __future__ import annotations

import jax
from absl import logging
from flax import nnx

from w2v_jax import checkpoint, sharding
from w2v_jax.data.sources import text
from w2v_jax.train import build, loop
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import Checkpoints, abstract, run_config
from w2v_jax.train.finetune import FineTuning, run_backbone_config


def _task(workdir: str) -> FineTuning:
    return FineTuning(run_config(workdir), run_backbone_config(workdir))


def restore_model(workdir: str, step: str | int = "best"):
    """(config, FrameClassifier, step) of checkpoint `step` ('best', 'latest' or a number)."""
    task = _task(workdir)
    checkpoints = Checkpoints(workdir, task.config, read_only=True)
    try:
        if step == "best":
            chosen = checkpoints.best_step() or checkpoints.latest_step()
        elif step == "latest":
            chosen = checkpoints.latest_step()
        else:
            chosen = int(step)
        if chosen is None:
            raise FileNotFoundError(f"{workdir}: no checkpoint to restore")
        graphdef, state = S.Phases(task).abstract_state(checkpoints.meta(chosen)["phase"])
        mesh = sharding.make_mesh(devices=jax.local_devices())
        state, _ = checkpoints.restore(chosen, abstract(state, sharding.state_shardings(state, mesh)))
    finally:
        checkpoints.close()
    return task.config, nnx.merge(graphdef, state["params"], state["rng"]), chosen


def export_backbone(workdir: str, out_dir: str, step: str | int = "best") -> int:
    """Write the backbone of checkpoint `step` ('best', 'latest' or a number); returns the step."""
    _, model, chosen = restore_model(workdir, step)
    checkpoint.save_model(model.wav2vec2, out_dir)
    logging.info("exported step %d of %s to %s", chosen, workdir, out_dir)
    return chosen


def evaluate_run(workdir: str, split: str = "test", step: str | int = "best") -> dict:
    """Frame accuracy, per-class accuracy, confusion and per-speaker counts ("by_speaker":
    speakers, frames right, frames scored) per task of a run's checkpoint on `split`."""
    config, model, chosen = restore_model(workdir, step)
    task = FineTuning(config, model.wav2vec2.config)
    task.eval_split = build.load_split(task.config, split, task.model_config)
    task.eval_speakers = sorted({text(task.eval_split.source[i]["speaker"])
                                 for i in range(len(task.eval_split))})
    # The run's eval batch need not split over this machine's devices: use as many as it does.
    devices = max(d for d in range(1, jax.device_count() + 1) if config.data.eval_batch_size % d == 0)
    mesh = sharding.make_mesh(devices=jax.devices()[:devices])
    graphdef, params, rng = S.split_model(model)
    params_sharding = sharding.state_shardings(params, mesh)
    rng_sharding = sharding.state_shardings(rng, mesh)
    eval_step = S.jit_eval_step(graphdef, task, mesh, params_sharding, rng_sharding)
    state = {"params": jax.device_put(params, params_sharding), "rng": jax.device_put(rng, rng_sharding)}
    metrics = loop.evaluate(task, eval_step, state, mesh)
    return {"step": chosen, **{k.replace("dev/", f"{split}/", 1): v for k, v in metrics.items()}}
