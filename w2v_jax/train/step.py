"""The train state (a plain pytree), the jitted train and eval steps, and the phase switch.

    state = {"step": int32 (), "params": nnx.State of every Param,
             "rng": nnx.State of the model's RngState (dropout, LayerDrop, SpecAugment),
             "opt": {"heads": Adam state, "backbone": Adam state (phase 2 only)}}

A step differentiates only the parameters its phase trains: the frozen ones enter
as constants, so neither phase 1's backbone nor the frozen CNN has its gradient
computed. One step = one optimizer update over `grad_accum` micro-batches (a scan),
with batch arrays shaped (grad_accum, batch, ...).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2v_jax import sharding
from w2v_jax.train import optim
from w2v_jax.train.heads import FrameClassifier, confusion_matrix, multitask_loss

State = dict[str, Any]
BATCH_KEYS = ("input_values", "attention_mask")


def split_model(model: FrameClassifier) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, rng): the model holds nothing else."""
    return nnx.split(model, nnx.Param, nnx.RngState)


def _group_params(params: nnx.State, groups: tuple[str, ...], freeze_feature_encoder: bool):
    """({group: its trainable params}, the params no group trains)."""
    *trainable, frozen = nnx.split_state(
        params, *(optim.group_filter(g, freeze_feature_encoder) for g in groups), ...)
    return dict(zip(groups, trainable)), frozen


def init_opt(params: nnx.State, groups: tuple[str, ...], config: ml_collections.ConfigDict) -> dict:
    trainable, _ = _group_params(params, groups, config.freeze_feature_encoder)
    tx = optim.direction(config)
    return {g: tx.init(p) for g, p in trainable.items()}


def initial_state(params: nnx.State, rng: nnx.State, config: ml_collections.ConfigDict) -> State:
    groups = optim.phase_groups(0, config.freeze_steps)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "rng": rng,
            "opt": init_opt(params, groups, config)}


def groups_of(state: State) -> tuple[str, ...]:
    return tuple(g for g in (optim.HEADS, optim.BACKBONE) if g in state["opt"])


def with_backbone_opt(state: State, config: ml_collections.ConfigDict) -> State:
    """Phase 2 begins: the backbone's Adam state appears, zero, with its own step count."""
    opt = init_opt(state["params"], (optim.BACKBONE,), config)
    return {**state, "opt": {**state["opt"], **opt}}


def state_shardings(state: State, mesh: Mesh):
    return sharding.state_shardings(state, mesh)


def batch_shardings(mesh: Mesh) -> NamedSharding:
    """(grad_accum, batch, ...) arrays: the batch axis over data and fsdp."""
    return NamedSharding(mesh, P(None, sharding.BATCH_AXES))


def make_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                    groups: tuple[str, ...]) -> Callable[[State, dict], tuple[State, dict]]:
    """The pure (not yet jitted) update of one phase: (state, batch) -> (state, metrics)."""
    tx = optim.direction(config)
    schedule = optim.schedule_from_config(config)
    weights = {task: float(w) for task, w in config.tasks.items()}
    clip_norm = config.optimizer.clip_norm
    freeze_cnn = config.freeze_feature_encoder

    def loss_fn(trainable, frozen, rng, micro):
        model = nnx.merge(graphdef, nnx.merge_state(*trainable.values(), frozen), rng, copy=True)
        logits = model(micro["input_values"], micro["attention_mask"], deterministic=False)
        labels = {task: micro[f"labels/{task}"] for task in weights}
        loss, metrics = multitask_loss(logits, labels, weights)
        return loss, (metrics, nnx.state(model, nnx.RngState))

    def train_step(state: State, batch: dict) -> tuple[State, dict]:
        trainable, frozen = _group_params(state["params"], groups, freeze_cnn)

        def grads_of(rng, micro):
            (loss, (metrics, rng)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                trainable, frozen, rng, micro)
            return grads, rng, {"loss": loss, **metrics}

        accum = batch["input_values"].shape[0]
        if accum == 1:  # no accumulator: zeroing and adding one costs a pass over the model
            grads, rng, metrics = grads_of(state["rng"], jax.tree.map(lambda a: a[0], batch))
        else:
            def micro_step(carry, micro):
                grads, rng = carry
                g, rng, metrics = grads_of(rng, micro)
                return (jax.tree.map(jnp.add, grads, g), rng), metrics

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (grads, rng), metrics = jax.lax.scan(micro_step, (zeros, state["rng"]), batch)
            grads = jax.tree.map(lambda g: g / accum, grads)
        grads, grad_norm = optim.clip_by_global_norm(grads, clip_norm)
        learning_rate = schedule(state["step"])
        new_trainable, new_opt = {}, {}
        for group in groups:
            updates, new_opt[group] = tx.update(grads[group], state["opt"][group], trainable[group])
            updates = jax.tree.map(lambda u: -learning_rate * u, updates)
            new_trainable[group] = optax.apply_updates(trainable[group], updates)
        metrics = jax.tree.map(jnp.mean, metrics)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_trainable = keep(new_trainable, trainable)
        new_state = {"step": state["step"] + 1,
                     "params": nnx.merge_state(*new_trainable.values(), frozen),
                     "rng": rng, "opt": keep(new_opt, state["opt"])}
        return new_state, {**metrics, "grad_norm": grad_norm, "learning_rate": learning_rate,
                           "finite": finite}

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, tasks: tuple[str, ...]):
    """(params, rng, batch) -> {task: confusion matrix} of the batch (IGNORE frames skipped)."""
    def eval_step(params, rng, batch):
        model = nnx.merge(graphdef, params, rng)
        logits = model(batch["input_values"], batch["attention_mask"], deterministic=True)
        return {task: confusion_matrix(logits[task], batch[f"labels/{task}"]) for task in tasks}
    return eval_step


def jit_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                   groups: tuple[str, ...], mesh: Mesh, state_sharding):
    """The phase's step under jit: sharded in and out, the input state donated."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(make_train_step(graphdef, config, groups),
                   in_shardings=(state_sharding, batch_shardings(mesh)),
                   out_shardings=(state_sharding, replicated), donate_argnums=0)


def jit_eval_step(graphdef: nnx.GraphDef, tasks: tuple[str, ...], mesh: Mesh, params_sharding,
                  rng_sharding):
    replicated = NamedSharding(mesh, P())
    return jax.jit(make_eval_step(graphdef, tasks),
                   in_shardings=(params_sharding, rng_sharding, sharding.batch_sharding(mesh)),
                   out_shardings=replicated)


def place(state: State, shardings) -> State:
    """Host values that every process holds identically (a freshly built state) as global arrays."""
    def put(x, where):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # via its raw bits: callbacks need numbers
            impl = jax.random.key_impl(x)
            bits = put(jax.random.key_data(x), where)
            return jax.jit(lambda b: jax.random.wrap_key_data(b, impl=impl), out_shardings=where)(bits)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, where, lambda index: host[index])
    return jax.tree.map(put, state, shardings)
