"""SVCCA and PWCCA between embeddings and labels (or another layer), per DESIGN.md.

Everything is computed from centred moments (one N x D x D Gram per layer) and
eigen-decompositions of D x D matrices; N (samples) >> D, so this replaces the
usual N x D SVD. Kernels (`*_from_moments`) are pure and jittable; the public
functions validate concrete inputs first and then call one jitted function.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from w2v_jax.analysis.checks import as_targets, check_keep, check_pair
from w2v_jax.analysis.moments import Moments, compute_dtype, full_precision, moments_of
from w2v_jax.analysis.spectral import eigh_desc, keep_mask, masked_mean, rank_mask, whitener
from w2v_jax.analysis.sweep import map_layers

MODES = ("rank", "google")
_PINV_RCOND = 1e-15  # numpy.linalg.pinv's default, which google's code relies on


class _Canonical(NamedTuple):
    lx: jax.Array  # eigenvalues of Xc^T Xc, descending
    vx: jax.Array  # their eigenvectors
    mx: jax.Array  # kept x directions (top-k and above the rank tolerance)
    u: jax.Array | None  # left singular vectors of Qx^T Qy (x's eigenbasis), if asked
    rho: jax.Array  # canonical correlations, descending
    count: jax.Array  # how many are real: min(k, rank of centred y)


def _canonical(m: Moments, keep: jax.Array | float, vectors: bool = False) -> _Canonical:
    """Canonical correlations of the top-`keep` x directions with y, from moments."""
    lx, vx = eigh_desc(m.xx)
    mx = keep_mask(lx, keep, rank_mask(lx, m.xx_eps))
    wx = whitener(vx, lx, mx)
    if m.y_counts is None:
        ly, vy = eigh_desc(m.yy)
        my = rank_mask(ly, m.yy_eps)
        # Qx^T Qy with Qx = Xc Wx, Qy = Yc Wy: orthonormal bases of x_k and of y.
        cross_cov = wx.T @ m.xy @ whitener(vy, ly, my)
        rank_y = jnp.sum(my)
    else:
        # One-hot y: projecting Qx onto y's span replaces each row by its class mean, so
        # Qx^T P_y Qx = A A^T with A = Wx^T xy diag(counts)^(-1/2): same singular values
        # and left vectors as Qx^T Qy, and y's rank is exactly the classes present - 1.
        present = m.y_counts > 0
        scale = jnp.where(present, jax.lax.rsqrt(jnp.where(present, m.y_counts, 1.0)), 0.0)
        cross_cov = wx.T @ (m.xy * scale)
        rank_y = jnp.sum(present) - 1
    if vectors:
        u, rho, _ = jnp.linalg.svd(cross_cov, full_matrices=False)
    else:
        u, rho = None, jnp.linalg.svd(cross_cov, compute_uv=False)
    return _Canonical(lx, vx, mx, u, rho, jnp.minimum(jnp.sum(mx), rank_y))


@full_precision
def svcca_from_moments(m: Moments, keep: jax.Array | float = 0.99,
                       epsilon: jax.Array | float = 1e-10, mode: str = "rank") -> jax.Array:
    """SVCCA score from centred moments (see `svcca`)."""
    if mode == "rank":
        cc = _canonical(m, keep)
        return masked_mean(cc.rho, cc.count)
    if mode == "google":
        return _google_from_moments(m, keep, epsilon)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _google_from_moments(m: Moments, keep, epsilon) -> jax.Array:
    """google/svcca get_cca_similarity on (x_k, y), masked instead of cropped.

    Its steps: np.cov (divide by n - 1), rescale by the max-abs entry of each
    auto-covariance, drop neurons whose rescaled variance is < epsilon
    (remove_small), add epsilon to the diagonals, pinv, matrix square root via
    eigh, SVD; the score is the mean of all min(#x, #y) coefficients, so the
    ~0 coefficient of a one-hot's null direction counts. x_k = Xc V_k has the
    diagonal covariance diag(lam_k) / (n - 1). Dropped neurons get an identity
    diagonal and zero cross-covariance, contributing exact zero singular values.
    """
    lx, vx = eigh_desc(m.xx)
    mx = keep_mask(lx, keep, rank_mask(lx, m.xx_eps))
    dof = m.n - 1
    sxx = jnp.where(mx, lx, 0.0) / dof
    sxy = jnp.where(mx[:, None], vx.T @ m.xy, 0.0) / dof
    syy = m.yy / dof
    xmax, ymax = jnp.max(jnp.abs(sxx)), jnp.max(jnp.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / jnp.sqrt(xmax * ymax)
    x_in = mx & (sxx >= epsilon)
    y_in = jnp.diagonal(syy) >= epsilon
    # pinv of the ridged, cropped covariances, then their square roots.
    dx = jnp.where(x_in, sxx + epsilon, 1.0)
    inv_x = jnp.where(dx > _PINV_RCOND * jnp.max(dx), 1.0 / dx, 0.0)
    both = y_in[:, None] & y_in[None, :]
    syy = jnp.where(both, syy, 0.0) + jnp.diag(jnp.where(y_in, epsilon, 1.0))
    wy, qy = jnp.linalg.eigh(syy)
    inv_y = jnp.where(jnp.abs(wy) > _PINV_RCOND * jnp.max(jnp.abs(wy)), 1.0 / wy, 0.0)
    invsqrt_y = (qy * jnp.sqrt(inv_y)) @ qy.T
    arr = (jnp.where(x_in, jnp.sqrt(inv_x), 0.0)[:, None] * jnp.where(y_in[None, :], sxy, 0.0)
           ) @ invsqrt_y
    rho = jnp.abs(jnp.linalg.svd(arr, compute_uv=False))
    return masked_mean(rho, jnp.minimum(jnp.sum(x_in), jnp.sum(y_in)))


@full_precision
def pwcca_from_moments(m: Moments, keep: jax.Array | float = 1.0) -> jax.Array:
    """PWCCA score from centred moments (see `pwcca`)."""
    cc = _canonical(m, keep, vectors=True)
    # Xc^T h_i for the unit canonical variate h_i = Xc Wx u_i is Vx diag(sqrt(lam)) u_i.
    loadings = (cc.vx * jnp.where(cc.mx, jnp.sqrt(cc.lx), 0.0)) @ cc.u
    alpha = jnp.sum(jnp.abs(loadings), axis=0)
    alpha = jnp.where(jnp.arange(alpha.shape[0]) < cc.count, alpha, 0.0)
    return jnp.sum(alpha * cc.rho) / jnp.sum(alpha)


@partial(jax.jit, static_argnames=("num_classes", "mode"))
def _svcca_jit(x, y, num_classes, keep, epsilon, mode):
    return svcca_from_moments(moments_of(x, y, num_classes), keep, epsilon, mode)


@partial(jax.jit, static_argnames=("num_classes", "mode", "batch_size"))
def _svcca_layers_jit(h, y, num_classes, keep, epsilon, mode, batch_size):
    score = lambda x: svcca_from_moments(moments_of(x, y, num_classes), keep, epsilon, mode)
    return map_layers(score, h, batch_size)


@partial(jax.jit, static_argnames=("num_classes",))
def _pwcca_jit(x, y, num_classes, keep):
    return pwcca_from_moments(moments_of(x, y, num_classes), keep)


@partial(jax.jit, static_argnames=("num_classes", "batch_size"))
def _pwcca_layers_jit(h, y, num_classes, keep, batch_size):
    score = lambda x: pwcca_from_moments(moments_of(x, y, num_classes), keep)
    return map_layers(score, h, batch_size)


def check_mode(mode: str) -> None:
    """A known mode; google mode only with x64, the precision its epsilon ridge needs."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "google" and compute_dtype() != jnp.float64:
        # Its ridge (1e-10) lies below float32's resolution: a one-hot's null direction
        # then comes out slightly negative and its inverse square root is NaN.
        raise ValueError("mode='google' needs float64: enable x64 "
                         "(jax.config.update('jax_enable_x64', True)); rank mode works in both")


def svcca(x: jax.Array, y: jax.Array, *, keep: float = 0.99, epsilon: float = 1e-10,
          mode: str = "rank") -> jax.Array:
    """Mean canonical correlation between the top SVD directions of x and y.

    Args:
      x: (N, Dx) embeddings, samples by features (float32 or float64).
      y: (N, Dy) targets: one-hot labels (see `one_hot`) or another layer; 1-D
        integer labels are one-hot encoded with classes 0..max. The ignore label
        -1 is rejected: drop those samples first.
      keep: fraction of x's variance (squared singular values) the kept top-k
        directions must reach, in (0, 1]; traced, so changing it does not recompile.
      epsilon: google mode only: the ridge and the remove_small cut of
        get_cca_similarity. Rank mode uses dtype-relative rank tolerances instead.
      mode: "rank" averages the min(k, rank(centred y)) leading correlations, so C
        one-hot classes give C - 1 of them; "google" reproduces get_cca_similarity's
        mean over all min(k, Dy) coefficients, degenerate ones included (its ridge
        lifts rounding in y's null direction by 1/sqrt(epsilon): use x64, as
        google's float64 numpy code effectively does; it raises without x64).

    Returns:
      A 0-d array in [0, 1]: float64 when x64 is enabled, else float32. The D x D
      stages run in that dtype; the N x D x D Gram runs in x's dtype.

    Raises:
      ValueError: keep outside (0, 1], different sample counts, NaN/inf, y without
        variance (a single class), N <= Dx + Dy (too few samples), or google mode
        without x64. Checked on concrete arrays only.

    Labels (1-D integers, or a concrete one-hot matrix) take an exact path: the
    label moments come from class counts and y's rank is the classes present - 1.
    """
    check_mode(mode)
    x, (y, num_classes) = jnp.asarray(x), as_targets(y)
    check_pair(x, y, num_classes)
    return _svcca_jit(x, y, num_classes, check_keep(keep), float(epsilon), mode)


def svcca_layers(h: jax.Array, y: jax.Array, *, keep: float = 0.99, epsilon: float = 1e-10,
                 mode: str = "rank", batch_size: int | None = None) -> jax.Array:
    """`svcca` of every layer of h (L, N, D) against y, in one jit; returns (L,).

    batch_size: layers processed together (vmapped); None means all L at once.
    Smaller values bound memory (each layer in flight holds a centred N x D copy).
    """
    check_mode(mode)
    h, (y, num_classes) = jnp.asarray(h), as_targets(y)
    check_pair(h, y, num_classes, batch_dims=1)
    return _svcca_layers_jit(h, y, num_classes, check_keep(keep), float(epsilon), mode,
                             batch_size)


def pwcca(x: jax.Array, y: jax.Array, *, keep: float = 1.0) -> jax.Array:
    """Projection-weighted CCA (Morcos et al. 2018) of x (N, Dx) and y (N, Dy).

    The canonical correlations rho_i between x's top-`keep` directions (default:
    all of x's numerical rank, no SVD step) and y are averaged with weights
    alpha_i = sum_j |<h_i, x_j>|, h_i x's unit canonical variates and x_j its
    centred neurons, over the min(rank x, rank y) leading pairs. The weights
    always come from x, the representation under study (google's pwcca.py uses
    whichever side has fewer neurons). Same inputs, errors and dtype as `svcca`.
    """
    x, (y, num_classes) = jnp.asarray(x), as_targets(y)
    check_pair(x, y, num_classes)
    return _pwcca_jit(x, y, num_classes, check_keep(keep))


def pwcca_layers(h: jax.Array, y: jax.Array, *, keep: float = 1.0,
                 batch_size: int | None = None) -> jax.Array:
    """`pwcca` of every layer of h (L, N, D) against y, in one jit; returns (L,)."""
    h, (y, num_classes) = jnp.asarray(h), as_targets(y)
    check_pair(h, y, num_classes, batch_dims=1)
    return _pwcca_layers_jit(h, y, num_classes, check_keep(keep), batch_size)
