"""A run's fine-tuned backbone as a model directory that extraction loads (checkpoint.load_model)."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
from absl import logging
from flax import nnx

from w2v_jax import checkpoint, sharding
from w2v_jax.train import build, optim
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import Checkpoints, abstract

CONFIG_FILE = "config.json"


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir."""
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
        return ml_collections.ConfigDict(json.load(f)["config"])


def export_backbone(workdir: str, out_dir: str, step: str | int = "best") -> int:
    """Write the backbone of checkpoint `step` ('best', 'latest' or a number); returns the step."""
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
            raise FileNotFoundError(f"{workdir}: no checkpoint to export")
        model_config = build.backbone_config(config)
        graphdef, params, rng = S.split_model(build.abstract_model(config, model_config))
        state = jax.eval_shape(lambda: S.initial_state(params, rng, config))
        if optim.BACKBONE in checkpoints.meta(chosen)["groups"]:
            state = jax.eval_shape(lambda s: S.with_backbone_opt(s, config), state)
        mesh = sharding.make_mesh(devices=jax.local_devices())
        state, _ = checkpoints.restore(chosen, abstract(state, S.state_shardings(state, mesh)))
    finally:
        checkpoints.close()
    model = nnx.merge(graphdef, state["params"], state["rng"])
    checkpoint.save_model(model.wav2vec2, out_dir)
    logging.info("exported step %d of %s to %s", chosen, workdir, out_dir)
    return chosen
