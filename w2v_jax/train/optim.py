"""fairseq's tri-stage learning rate, the Adam(W) update, and which parameters each phase trains.

The optimizer state is kept per parameter group ("heads", "backbone"), each with its
own Adam step count: the backbone's moments start at zero when phase 2 begins, as in
fairseq, where a parameter's Adam state is created on its first gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

HEADS, BACKBONE = "heads", "backbone"


def tri_stage_schedule(peak: float, total_steps: int, *, warmup_ratio: float = 0.1,
                       hold_ratio: float = 0.4, decay_ratio: float = 0.5, init_scale: float = 0.01,
                       final_scale: float = 0.05) -> optax.Schedule:
    """fairseq's tri_stage: linear warmup from init_scale * peak, hold at peak,
    exponential decay to final_scale * peak, then constant."""
    warmup = int(warmup_ratio * total_steps)
    hold = int(hold_ratio * total_steps)
    decay = int(decay_ratio * total_steps)
    init_lr, final_lr = init_scale * peak, final_scale * peak
    warmup_rate = (peak - init_lr) / warmup if warmup else 0.0
    decay_factor = -math.log(final_scale) / decay if decay else 0.0

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        after_warmup = step - warmup
        after_hold = after_warmup - hold
        return jnp.where(
            step < warmup, init_lr + warmup_rate * step,
            jnp.where(after_warmup < hold, peak,
                      jnp.where(after_hold < decay, peak * jnp.exp(-decay_factor * after_hold),
                                final_lr)))
    return schedule


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


def group_filter(group: str, freeze_feature_encoder: bool) -> nnx.filterlib.Filter:
    """The parameters a group trains; with freeze_feature_encoder the CNN belongs to none."""
    if group == HEADS:
        return nnx.All(nnx.Param, nnx.PathContains("heads"))
    if freeze_feature_encoder:
        return nnx.All(nnx.Param, nnx.PathContains("wav2vec2"),
                       nnx.Not(nnx.PathContains("feature_extractor")))
    return nnx.All(nnx.Param, nnx.PathContains("wav2vec2"))


def phase_groups(step: int, freeze_steps: int) -> tuple[str, ...]:
    """Phase 1 (step < freeze_steps) trains the heads; phase 2 everything it may."""
    return (HEADS,) if step < freeze_steps else (HEADS, BACKBONE)


def clip_by_global_norm(grads, max_norm: float):
    """(clipped grads, the norm before clipping); max_norm 0 = no clipping."""
    norm = optax.tree.norm(grads)
    if max_norm <= 0:
        return grads, norm
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, grads), norm
