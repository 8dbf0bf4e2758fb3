"""The optimizer, from optax parts: fairseq's tri-stage schedule, Adam(W) per parameter group,
a frozen group, global-norm clipping, skipped non-finite updates and gradient accumulation.

    MultiSteps (grad_accum > 1: sums the micro-batch gradients, updates every grad_accum calls)
      chain(record_grad_norm,
            apply_if_finite(chain(clip_by_global_norm, partition({group: Adam(W), "frozen": zero}))),
            scale_by_schedule(-tri_stage))

Each group has its own Adam state, so a group that appears in a later phase (the backbone
after freeze_steps) starts with zero moments and its own step count, as in fairseq, where a
parameter's Adam state is created on its first gradient. The schedule counts every update,
skipped ones included, so the learning rate is that of the global step.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

FROZEN = "frozen"  # the label of parameters no update touches
# apply_if_finite applies a non-finite update after this many in a row; the loop stops first.
_NEVER_FORCE = 2**31 - 1


def tri_stage_schedule(peak: float, total_steps: int, *, warmup_ratio: float = 0.1,
                       hold_ratio: float = 0.4, decay_ratio: float = 0.5, init_scale: float = 0.01,
                       final_scale: float = 0.05) -> optax.Schedule:
    """fairseq's tri_stage: linear warmup from init_scale * peak, hold at peak,
    exponential decay to final_scale * peak, then constant."""
    warmup = int(warmup_ratio * total_steps)
    hold = int(hold_ratio * total_steps)
    decay = int(decay_ratio * total_steps)
    final = final_scale * peak
    return optax.join_schedules(
        [optax.linear_schedule(init_scale * peak, peak, max(warmup, 1)),
         optax.constant_schedule(peak),
         optax.exponential_decay(peak, max(decay, 1), final_scale, end_value=final),
         optax.constant_schedule(final)],
        boundaries=[warmup, warmup + hold, warmup + hold + decay])


def schedule_from_config(config: ml_collections.ConfigDict) -> optax.Schedule:
    o = config.optimizer
    return tri_stage_schedule(o.learning_rate, config.total_steps, warmup_ratio=o.warmup_ratio,
                              hold_ratio=o.hold_ratio, decay_ratio=o.decay_ratio,
                              init_scale=o.init_scale, final_scale=o.final_scale)


def direction(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The update before the learning rate: Adam moments, with L2 (adam) or decoupled decay (adamw)."""
    o = config.optimizer
    adam = optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps)
    if o.weight_decay == 0.0:
        return adam
    if o.name == "adam":  # torch.optim.Adam: the decay term joins the gradient before the moments
        return optax.chain(optax.add_decayed_weights(o.weight_decay), adam)
    return optax.chain(adam, optax.add_decayed_weights(o.weight_decay))


class GradNormState(NamedTuple):
    grad_norm: jax.Array


def record_grad_norm() -> optax.GradientTransformation:
    """Passes updates through, keeping their global norm (before clipping) in its state for logging."""
    return optax.GradientTransformation(
        lambda params: GradNormState(jnp.zeros((), jnp.float32)),
        lambda updates, state, params=None: (updates, GradNormState(optax.tree.norm(updates))))


def optimizer(config: ml_collections.ConfigDict, groups: Iterable[str],
              param_labels: Callable[[Any], Any]) -> optax.GradientTransformation:
    """The update of one phase: `groups` are the labels it trains; param_labels(params) gives
    each parameter its group or FROZEN."""
    o = config.optimizer
    update = optax.partition({**{g: direction(config) for g in groups}, FROZEN: optax.set_to_zero()},
                             param_labels)
    if o.clip_norm > 0:  # 0 = off
        update = optax.chain(optax.clip_by_global_norm(o.clip_norm), update)
    schedule = schedule_from_config(config)
    tx = optax.chain(record_grad_norm(), optax.apply_if_finite(update, _NEVER_FORCE),
                     optax.scale_by_schedule(lambda count: -schedule(count)))
    if o.grad_accum > 1:  # a sum: each micro-batch's loss is already its share of the batch mean
        tx = optax.MultiSteps(tx, o.grad_accum, use_grad_mean=False)
    return tx


def enter_phase(opt_state: Any, tx: optax.GradientTransformation, params: Any) -> Any:
    """The optimizer state of a new phase's `tx`: every group it shares with the old phase keeps
    its state (moments, counts), a new group starts fresh; the schedule, non-finite counters and
    accumulator carry over."""
    fresh = optax.tree_utils.tree_get(tx.init(params), "inner_states")
    old = optax.tree_utils.tree_get(opt_state, "inner_states")
    for group in set(old) & set(fresh):
        if jax.tree.structure(old[group]) != jax.tree.structure(fresh[group]):
            raise ValueError(f"optimizer group {group!r} labels other parameters in the new phase; "
                             "a group must keep its parameters across phases")
    return optax.tree_utils.tree_set(opt_state, inner_states={**fresh, **{g: old[g] for g in set(old) & set(fresh)}})


def step_report(opt_state: Any) -> dict[str, jax.Array]:
    """What the optimizer knows after an update: the gradient norm, whether it was applied, and
    the non-finite updates in a row and in all."""
    get = lambda key: optax.tree_utils.tree_get(opt_state, key)
    return {"grad_norm": get("grad_norm"), "finite": get("last_finite"),
            "nonfinite_streak": get("notfinite_count"), "nonfinite_total": get("total_notfinite")}
