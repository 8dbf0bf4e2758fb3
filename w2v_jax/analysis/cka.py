"""Linear CKA (Kornblith et al. 2019) from centred moments.

CKA(X, Y) = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F): the feature-space
form of HSIC with linear kernels, so it needs only the D x D moments, never the
N x N kernel matrices.
"""

from functools import partial

import jax
import jax.numpy as jnp

from w2v_jax.analysis.checks import as_targets, check_pair
from w2v_jax.analysis.moments import Moments, full_precision, moments_of
from w2v_jax.analysis.sweep import map_layers


@full_precision
def cka_from_moments(m: Moments) -> jax.Array:
    """Linear CKA score from centred moments (see `cka`)."""
    # Normalise each matrix first: the squared Frobenius norms of N x D x D sums
    # overflow float32 for large embeddings.
    sx, sy = jnp.max(jnp.abs(m.xx)), jnp.max(jnp.abs(m.yy))
    xy = m.xy / jnp.sqrt(sx * sy)
    return jnp.sum(xy**2) / jnp.sqrt(jnp.sum((m.xx / sx) ** 2) * jnp.sum((m.yy / sy) ** 2))


@partial(jax.jit, static_argnames=("num_classes",))
def _cka_jit(x, y, num_classes):
    return cka_from_moments(moments_of(x, y, num_classes))


@partial(jax.jit, static_argnames=("num_classes", "batch_size"))
def _cka_layers_jit(h, y, num_classes, batch_size):
    score = lambda x: cka_from_moments(moments_of(x, y, num_classes))
    return map_layers(score, h, batch_size)


def cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Linear CKA between x (N, Dx) and y (N, Dy) (or 1-D integer labels), a 0-d array in [0, 1].

    Invariant to rotations and isotropic scaling of either side, not to general
    invertible linear maps (unlike CCA). Same input checks and dtype as `svcca`.
    """
    x, (y, num_classes) = jnp.asarray(x), as_targets(y)
    check_pair(x, y, num_classes)
    return _cka_jit(x, y, num_classes)


def cka_layers(h: jax.Array, y: jax.Array, *, batch_size: int | None = None) -> jax.Array:
    """`cka` of every layer of h (L, N, D) against y, in one jit; returns (L,)."""
    h, (y, num_classes) = jnp.asarray(h), as_targets(y)
    check_pair(h, y, num_classes, batch_dims=1)
    return _cka_layers_jit(h, y, num_classes, batch_size)
