"""SpecAugment span masks drawn on the device with static shapes.

Follows transformers' `_compute_mask_indices`: per example, num_spans =
int(prob * length / span + u) (u ~ U[0, 1)), at least `min_masks`, at most what
fits; span starts are drawn without replacement from [0, length - span]; spans may
overlap. Only the array of candidate starts has a fixed size, so one compiled program
serves every draw and every length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_spans(size: int, prob: float, span: int, min_masks: int) -> int:
    """Static upper bound on the spans drawn for a sequence of `size`."""
    return max(0, min(max(int(prob * size / span + 1.0), min_masks), size // span))


def span_mask(key: jax.Array, lengths: jax.Array, size: int, prob: float, span: int,
              min_masks: int) -> jax.Array:
    """Boolean (B, size) mask of spans inside each example's first `lengths[b]` positions."""
    num_candidates = max_spans(size, prob, span, min_masks)
    batch = lengths.shape[0]
    if num_candidates == 0 or prob == 0.0:
        return jnp.zeros((batch, size), bool)
    k_count, k_start = jax.random.split(key)
    lengths = lengths.astype(jnp.int32)
    u = jax.random.uniform(k_count, (batch,))
    wanted = jnp.maximum(jnp.floor(prob * lengths / span + u).astype(jnp.int32), min_masks)
    wanted = jnp.minimum(wanted, jnp.minimum(size // span, jnp.maximum(lengths - span + 1, 0)))
    # Without replacement: the `num_candidates` valid start positions of lowest random score.
    positions = jnp.arange(size)
    scores = jax.random.uniform(k_start, (batch, size))
    scores = jnp.where(positions[None] <= lengths[:, None] - span, scores, jnp.inf)
    starts = jnp.argsort(scores, axis=-1)[:, :num_candidates]  # (B, M)
    used = jnp.arange(num_candidates)[None] < wanted[:, None]  # (B, M)
    offset = positions[None, None, :] - starts[:, :, None]  # (B, M, size)
    covered = (offset >= 0) & (offset < span) & used[:, :, None]
    return jnp.any(covered, axis=1)


def apply_spec_augment(key: jax.Array, hidden: jax.Array, frame_mask: jax.Array,
                       masked_embed: jax.Array, config) -> jax.Array:
    """Time spans replaced by the learned mask embedding, channel spans zeroed (HF order)."""
    k_time, k_feature = jax.random.split(key)
    batch, frames, channels = hidden.shape
    if config.mask_time_prob > 0.0:
        lengths = jnp.sum(frame_mask, axis=-1)
        time = span_mask(k_time, lengths, frames, config.mask_time_prob,
                         config.mask_time_length, config.mask_time_min_masks) & frame_mask
        hidden = jnp.where(time[:, :, None], masked_embed.astype(hidden.dtype), hidden)
    if config.mask_feature_prob > 0.0:
        feature = span_mask(k_feature, jnp.full((batch,), channels), channels,
                            config.mask_feature_prob, config.mask_feature_length,
                            config.mask_feature_min_masks)
        hidden = jnp.where(feature[:, None, :], 0, hidden)
    return hidden
