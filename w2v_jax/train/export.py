"""A run's fine-tuned backbone as a model directory that extraction loads (checkpoint.load_model)."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import logging
from flax import nnx

from w2v_jax import checkpoint, sharding
from w2v_jax.models import Wav2Vec2Config
from w2v_jax.train import build, optim
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import Checkpoints, abstract

CONFIG_FILE = "config.json"
# The backbone's Wav2Vec2Config as the run resolved it, so the workdir does not need config.init.
BACKBONE_CONFIG_FILE = "backbone_config.json"


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir."""
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        return ml_collections.ConfigDict(json.load(f)["config"])


def run_backbone_config(workdir: str) -> Wav2Vec2Config:
    """The backbone architecture (with its switches) the run in `workdir` saved when it started."""
    path = os.path.join(workdir, BACKBONE_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: a run writes it when it starts; rerun the "
                                "training command on this workdir (it resumes) to write it")
    with open(path) as f:
        return Wav2Vec2Config.from_dict(json.load(f))


def restore_model(workdir: str, step: str | int = "best"):
    """(config, FrameClassifier, step) of checkpoint `step` ('best', 'latest' or a number)."""
    config = run_config(workdir)
    checkpoints = Checkpoints(workdir, config, read_only=True)
    try:
        if step == "best":
            chosen = checkpoints.best_step() or checkpoints.latest_step()
        elif step == "latest":
            chosen = checkpoints.latest_step()
        else:
            chosen = int(step)
        if chosen is None:
            raise FileNotFoundError(f"{workdir}: no checkpoint to restore")
        model_config = run_backbone_config(workdir)
        graphdef, params, rng = S.split_model(build.abstract_model(config, model_config))
        state = jax.eval_shape(lambda: S.initial_state(params, rng, config))
        if optim.BACKBONE in checkpoints.meta(chosen)["groups"]:
            state = jax.eval_shape(lambda s: S.with_backbone_opt(s, config), state)
        mesh = sharding.make_mesh(devices=jax.local_devices())
        state, _ = checkpoints.restore(chosen, abstract(state, S.state_shardings(state, mesh)))
    finally:
        checkpoints.close()
    return config, nnx.merge(graphdef, state["params"], state["rng"]), chosen


def export_backbone(workdir: str, out_dir: str, step: str | int = "best") -> int:
    """Write the backbone of checkpoint `step` ('best', 'latest' or a number); returns the step."""
    _, model, chosen = restore_model(workdir, step)
    checkpoint.save_model(model.wav2vec2, out_dir)
    logging.info("exported step %d of %s to %s", chosen, workdir, out_dir)
    return chosen


def evaluate_run(workdir: str, split: str = "test", step: str | int = "best") -> dict:
    """Frame accuracy, per-class accuracy and confusion per task of a run's checkpoint on `split`."""
    from w2v_jax.train.loop import evaluate

    config, model, chosen = restore_model(workdir, step)
    model_config = model.wav2vec2.config
    # The run's eval batch need not split over this machine's devices: use as many as it does.
    devices = max(d for d in range(1, jax.device_count() + 1) if config.data.eval_batch_size % d == 0)
    mesh = sharding.make_mesh(devices=jax.devices()[:devices])
    graphdef, params, rng = S.split_model(model)
    params_sharding = sharding.state_shardings(params, mesh)
    rng_sharding = sharding.state_shardings(rng, mesh)
    eval_step = S.jit_eval_step(graphdef, tuple(config.tasks), mesh, params_sharding, rng_sharding)
    state = {"params": jax.device_put(params, params_sharding), "rng": jax.device_put(rng, rng_sharding)}
    metrics = evaluate(eval_step, state, build.load_split(config, split, model_config), config,
                       model_config, mesh)
    return {"step": chosen, **{k.replace("dev/", f"{split}/", 1): v for k, v in metrics.items()}}
