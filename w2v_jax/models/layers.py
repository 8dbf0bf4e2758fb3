"""Small building blocks shared by the wav2vec 2.0 modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# HF activations by config name; "gelu" is the exact (erf) GELU, as in PyTorch.
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str):
    return _ACTIVATIONS[name]


def dropout(x: jax.Array, rate: float, key: jax.Array | None, deterministic: bool) -> jax.Array:
    """Inverted dropout; a no-op when deterministic or rate == 0 (no key needed then)."""
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(key: jax.Array | None, num: int):
    """`num` keys from `key`, or `num` Nones when there is no randomness to draw."""
    if key is None:
        return (None,) * num
    return tuple(jax.random.split(key, num))


def conv1d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
           groups: int = 1) -> jax.Array:
    """x (B, T, Cin) * kernel (K, Cin / groups, Cout) -> (B, T', Cout), PyTorch semantics."""
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride,), padding=[(padding, padding)],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)
