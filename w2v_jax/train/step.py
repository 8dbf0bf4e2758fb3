"""The train state (a plain pytree), the jitted train and eval steps of any Task, phase switches.

    state = {"step": int32 (), "params": nnx.State of every Param,
             "rng": nnx.State of the model's RngState (dropout, LayerDrop, SpecAugment),
             "opt": the phase's optax state (optim.optimizer)}

A step differentiates only the parameters its phase trains: the frozen ones enter as
constants (their gradient is a zero the optimizer ignores). One step = one optimizer update
over grad_accum micro-batches (a scan feeding optax.MultiSteps), with batch arrays shaped
(grad_accum, batch, ...).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2v_jax import sharding
from w2v_jax.train import optim
from w2v_jax.train.task import Task, labels_of, param_path

State = dict[str, Any]


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, rng): a task's model holds nothing else."""
    return nnx.split(model, nnx.Param, nnx.RngState)


class Phases:
    """Each phase's optimizer, and the state of a phase built or entered in one place."""

    def __init__(self, task: Task):
        self.task = task
        self.optimizers = [optim.optimizer(task.config, task.groups(p), labels_of(task, p))
                           for p in range(task.num_phases)]

    def initial_state(self, params: nnx.State, rng: nnx.State, phase: int) -> State:
        return {"step": jnp.zeros((), jnp.int32), "params": params, "rng": rng,
                "opt": self.optimizers[phase].init(params)}

    def abstract_state(self, phase: int) -> tuple[nnx.GraphDef, State]:
        """(graphdef, the state's shapes and dtypes in `phase`), without computing any weights."""
        graphdef, params, rng = split_model(self.task.build_model(abstract=True))
        return graphdef, jax.eval_shape(lambda: self.initial_state(params, rng, phase))

    def enter(self, state: State, phase: int) -> State:
        return {**state, "opt": optim.enter_phase(state["opt"], self.optimizers[phase], state["params"])}


def trainable_filter(task: Task, phase: int):
    """The nnx filter of the parameters `phase` updates."""
    return lambda path, _: task.param_label(param_path(path), phase) != optim.FROZEN


def make_train_step(graphdef: nnx.GraphDef, task: Task, phase: int,
                    tx: optax.GradientTransformation) -> Callable[[State, dict], tuple[State, dict]]:
    """The pure (not yet jitted) update of one phase: (state, batch) -> (state, metrics)."""
    trains = trainable_filter(task, phase)
    schedule = optim.schedule_from_config(task.config)

    def loss_fn(trainable, frozen, rng, micro, normalizers, step):
        model = nnx.merge(graphdef, nnx.merge_state(trainable, frozen), rng, copy=True)
        loss, metrics = task.loss(model, micro, normalizers, step)
        return loss, ({"loss": loss, **metrics}, nnx.state(model, nnx.RngState))

    def train_step(state: State, batch: dict) -> tuple[State, dict]:
        normalizers = task.normalizers(batch)

        def micro_step(carry, micro):
            params, opt, rng = carry
            trainable, frozen = nnx.split_state(params, trains, ...)
            (_, (metrics, rng)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                trainable, frozen, rng, micro, normalizers, state["step"])
            grads = nnx.merge_state(grads, jax.tree.map(jnp.zeros_like, frozen))
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt, rng), metrics

        carry = (state["params"], state["opt"], state["rng"])
        if jax.tree.leaves(batch)[0].shape[0] == 1:  # no scan: one micro-batch
            (params, opt, rng), metrics = micro_step(carry, jax.tree.map(lambda a: a[0], batch))
        else:  # shares of the batch mean: their sum is the mean
            (params, opt, rng), metrics = jax.lax.scan(micro_step, carry, batch)
            metrics = jax.tree.map(lambda m: jnp.sum(m, 0), metrics)
        new_state = {"step": state["step"] + 1, "params": params, "rng": rng, "opt": opt}
        return new_state, {**metrics, **optim.step_report(opt),
                           "learning_rate": schedule(state["step"])}

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, task: Task):
    """(params, rng, batch) -> the task's additive statistics of the batch."""
    def eval_step(params, rng, batch):
        return task.eval_stats(nnx.merge(graphdef, params, rng), batch)
    return eval_step


def batch_shardings(mesh: Mesh) -> NamedSharding:
    """(grad_accum, batch, ...) arrays: the batch axis over data and fsdp."""
    return NamedSharding(mesh, P(None, sharding.BATCH_AXES))


def jit_train_step(graphdef: nnx.GraphDef, task: Task, phase: int, tx, mesh: Mesh, state_sharding):
    """The phase's step under jit: sharded in and out, the input state donated."""
    return jax.jit(make_train_step(graphdef, task, phase, tx),
                   in_shardings=(state_sharding, batch_shardings(mesh)),
                   out_shardings=(state_sharding, NamedSharding(mesh, P())), donate_argnums=0)


def jit_eval_step(graphdef: nnx.GraphDef, task: Task, mesh: Mesh, params_sharding, rng_sharding):
    return jax.jit(make_eval_step(graphdef, task),
                   in_shardings=(params_sharding, rng_sharding, sharding.batch_sharding(mesh)),
                   out_shardings=NamedSharding(mesh, P()))


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
