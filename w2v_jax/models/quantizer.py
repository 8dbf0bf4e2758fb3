"""The Gumbel product quantizer of wav2vec 2.0 (fairseq's GumbelVectorQuantizer).

G groups of V codewords each; a frame picks one codeword per group and the G picks are
concatenated into a `codevector_dim` vector. Parameters and shapes follow transformers'
`Wav2Vec2GumbelVectorQuantizer`: `codevectors` (1, G*V, codevector_dim / G) and
`weight_proj` (conv_dim[-1] -> G*V; a Flax kernel is the transposed torch weight).

Without a key the pick is the argmax (transformers' eval mode, fairseq's `hard_x`).
With a key it is fairseq's training pick: hard straight-through Gumbel-softmax, so the
forward value is exactly one-hot and the gradient is that of the soft sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from w2v_jax.sharding import axes

_HIGHEST = jax.lax.Precision.HIGHEST  # a one-hot selection must not round the codewords


@struct.dataclass
class QuantizerOutput:
    codevectors: jax.Array  # (B, T, codevector_dim)
    codes: jax.Array  # (B, T, G) int32: the codeword picked in each group
    probs: jax.Array  # (B, T, G, V) float32: softmax of the logits (no noise), for perplexities


class GumbelQuantizer(nnx.Module):
    def __init__(self, in_dim: int, num_groups: int, num_vars: int, codevector_dim: int, *,
                 rngs: nnx.Rngs):
        self.num_groups, self.num_vars = num_groups, num_vars
        # transformers' init: weight_proj ~ N(0, 1), bias 0; codewords ~ U[0, 1).
        self.weight_proj = nnx.Linear(in_dim, num_groups * num_vars,
                                      kernel_init=jax.nn.initializers.normal(1.0), rngs=rngs,
                                      kernel_metadata=axes("conv_features", "classes"),
                                      bias_metadata=axes("classes"))
        # Small (G*V codewords): replicated, under the replicated axis names.
        self.codevectors = nnx.Param(jax.random.uniform(
            rngs.params(), (1, num_groups * num_vars, codevector_dim // num_groups)),
            **axes("conv_in", "classes", "conv_features"))

    def __call__(self, features: jax.Array, *, key: jax.Array | None = None,
                 temperature: float | jax.Array = 2.0) -> QuantizerOutput:
        batch, frames, _ = features.shape
        logits = self.weight_proj(features).astype(jnp.float32)
        logits = logits.reshape(batch, frames, self.num_groups, self.num_vars)
        if key is None:
            codes = jnp.argmax(logits, axis=-1)
            onehot = jax.nn.one_hot(codes, self.num_vars, dtype=jnp.float32)
        else:
            soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / temperature, -1)
            codes = jnp.argmax(soft, axis=-1)
            # hard + (soft - soft): exactly one-hot forward (x - x is 0), soft gradient.
            onehot = jax.nn.one_hot(codes, self.num_vars, dtype=jnp.float32) + (
                soft - jax.lax.stop_gradient(soft))
        codebook = self.codevectors[...].reshape(self.num_groups, self.num_vars, -1)
        codevectors = jnp.einsum("btgv,gvd->btgd", onehot, codebook, precision=_HIGHEST)
        return QuantizerOutput(codevectors=codevectors.reshape(batch, frames, -1),
                               codes=codes.astype(jnp.int32), probs=jax.nn.softmax(logits, -1))


def perplexity(probs: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-group perplexity exp(H(p̄)) of the mean distribution over the masked frames.

    probs (B, T, G, V), mask (B, T) -> (G,). transformers sums the G values; so does
    fairseq (which writes log(p + 1e-7) where we take 0 log 0 = 0).
    """
    weights = mask.astype(jnp.float32)[:, :, None, None]
    mean = jnp.sum(probs * weights, axis=(0, 1)) / jnp.maximum(jnp.sum(weights), 1.0)
    entropy = -jnp.sum(jnp.where(mean > 0, mean * jnp.log(jnp.where(mean > 0, mean, 1.0)), 0.0), -1)
    return jnp.exp(entropy)
