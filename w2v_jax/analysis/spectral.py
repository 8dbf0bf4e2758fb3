"""Eigen-decompositions of the small D x D moment matrices, with static shapes.

Directions are never sliced away: they are masked, so a different number of kept
directions is a different mask, not a different shape (and not a recompile).
"""

import jax
import jax.numpy as jnp


def eigh_desc(g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors of a symmetric PSD matrix."""
    lam, vec = jnp.linalg.eigh(g)
    return jnp.maximum(lam[::-1], 0.0), vec[:, ::-1]


def rank_mask(lam: jax.Array, eps: float) -> jax.Array:
    """Which eigenvalues of a Gram matrix are signal rather than rounding.

    A Gram accumulated in a dtype with machine epsilon `eps` has its null
    directions at a few eps * lam_max (measured with `moments.gram`: <= 5 eps for
    centred float32 one-hots up to N = 200k, whose singular value is then ~1e-3 of
    the largest; ~2 eps for a rank-deficient float32 x with D = 1024). The cut
    lam > 4 max(sqrt(D), 4) eps lam_max (16 eps for labels, 1.5e-5 in float32 at
    D = 1024, 3e-14 in float64) clears that noise while
    keeping genuine directions of embeddings with outlier dimensions, which sit
    near 1e-4 of lam_max at the 99% cut. Relative, so the data's scale is moot.
    """
    rtol = 4.0 * max(lam.shape[-1] ** 0.5, 4.0) * eps
    return lam > lam[..., :1] * rtol


def keep_mask(lam: jax.Array, keep: jax.Array | float, valid: jax.Array) -> jax.Array:
    """The top-k directions, k the fewest whose eigenvalues reach `keep` of the total.

    The total is the whole spectrum (the trace), as with the singular values of
    an SVD: the many directions below the rank tolerance still hold variance.
    The result is then restricted to `valid` (rank) directions.
    """
    frac = jnp.cumsum(lam) / jnp.sum(lam)
    k = jnp.sum(frac < keep) + 1
    return (jnp.arange(lam.shape[-1]) < k) & valid


def whitener(vec: jax.Array, lam: jax.Array, mask: jax.Array) -> jax.Array:
    """W with W^T G W = I on the masked directions and 0 elsewhere (G = V diag(lam) V^T)."""
    scale = jnp.where(mask, jax.lax.rsqrt(jnp.where(mask, lam, 1.0)), 0.0)
    return vec * scale


def masked_mean(values: jax.Array, count: jax.Array) -> jax.Array:
    """Mean of the first `count` entries of `values` (count traced, shape static)."""
    take = jnp.arange(values.shape[-1]) < count
    return jnp.sum(jnp.where(take, values, 0.0)) / count
