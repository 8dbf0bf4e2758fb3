"""Input checks run on concrete arrays before the jitted kernels, and `one_hot`.

The kernels themselves cannot raise on data (they are traced), so every public
wrapper validates here first; arrays that are tracers (a caller's own jit) skip
the data checks and keep only the shape checks.
"""

import jax
import jax.numpy as jnp

from w2v_jax.analysis.moments import compute_dtype

IGNORE_LABEL = -1


def one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
    """Integer class labels (N,) -> one-hot (N, num_classes) in the compute dtype.

    Labels must lie in [0, num_classes). The ignore label -1 is rejected rather
    than mapped to an all-zero row: after centring such a row acts like an extra
    class and silently changes every score. Drop those frames first
    (`x[labels >= 0]`); `probe_layers` is the one API that masks -1 itself.
    """
    labels = jnp.asarray(labels)
    check_labels(labels, num_classes)
    return jax.nn.one_hot(labels, num_classes, dtype=compute_dtype())


def check_labels(labels: jax.Array, num_classes: int) -> None:
    """1-D integers in [0, num_classes), no ignore label (data checked on concrete arrays)."""
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo == IGNORE_LABEL:
            raise ValueError("labels contain the ignore label -1: drop those samples first "
                             "(x[labels >= 0], labels[labels >= 0])")
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{lo}, {hi}]")


@jax.jit
def _is_one_hot(y: jax.Array) -> jax.Array:
    return jnp.all((y == 0) | (y == 1)) & jnp.all(jnp.sum(y, axis=1) == 1)


def as_targets(y: jax.Array) -> tuple[jax.Array, int]:
    """(targets, num_classes): class labels (N,) int32 and their number for labels, given as
    1-D integers (classes 0..max) or as a concrete one-hot matrix; else (y (N, Dy), 0).

    Labels take the exact path (`moments.label_moments`): their rank is known, so no
    rounding tolerance decides it. A one-hot inside a caller's jit stays a matrix.
    """
    y = jnp.asarray(y)
    if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
        if isinstance(y, jax.core.Tracer):
            raise ValueError("integer labels inside jit need an explicit one_hot(labels, C)")
        num_classes = int(y.max()) + 1 if y.size else 0
        check_labels(y, num_classes)
        return y.astype(jnp.int32), num_classes
    if y.ndim != 2:
        raise ValueError(f"y must be (N, Dy) or 1-D integer labels, got shape {y.shape}")
    if _concrete(y) and y.shape[0] and bool(_is_one_hot(y)):
        return jnp.argmax(y, axis=1).astype(jnp.int32), y.shape[1]
    return y, 0


def check_keep(keep: float | jax.Array) -> float | jax.Array:
    """The SVD step's variance fraction as a float in (0, 1]; a tracer passes unchecked.

    Out-of-range values would not fail in the kernel: keep > 1 acts as 1, and keep <= 0
    or NaN keeps one direction. A Python float (not an int) keeps keep=1 and keep=1.0
    on one compiled program.
    """
    if not _concrete(keep):
        return keep
    value = float(keep)
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"keep must lie in (0, 1] (a fraction of x's variance), got {keep!r}")
    return value


def _concrete(a: jax.Array) -> bool:
    return not isinstance(a, jax.core.Tracer)


@jax.jit
def _data_flags(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(all finite, some matrix constant over samples) in one fused pass over x."""
    constant = jnp.all(jnp.max(x, axis=-2) == jnp.min(x, axis=-2), axis=-1)
    return jnp.all(jnp.isfinite(x)), jnp.any(constant)


def check_embeddings(x: jax.Array, name: str = "x", batch_dims: int = 0) -> None:
    """x must be floating, (..., N, D) with batch_dims leading axes, finite and not constant."""
    if x.ndim != 2 + batch_dims:
        raise ValueError(f"{name} must have {2 + batch_dims} dims (samples by features), "
                         f"got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if _concrete(x):
        finite, constant = _data_flags(x)
        if not finite:
            raise ValueError(f"{name} contains NaN or inf")
        if constant:
            raise ValueError(f"{name} has no variance: every sample has the same value"
                             + (" (a label set with a single class?)" if name == "y" else ""))


def check_pair(x: jax.Array, y: jax.Array, num_classes: int = 0, batch_dims: int = 0) -> None:
    """Shape and content checks shared by svcca, pwcca and cka; y as from `as_targets`.

    Rejects: different sample counts; non-finite values; x or y without variance
    (e.g. a label set with a single class); and n <= Dx + Dy, where canonical
    correlations can reach 1 from the sample count alone (two subspaces of R^(n-1)
    whose dimensions sum past n - 1 must intersect).
    """
    check_embeddings(x, "x", batch_dims)
    n, dx = x.shape[-2:]
    if y.shape[0] != n:
        raise ValueError(f"x has {n} samples but y has {y.shape[0]}: they must be the same samples")
    if num_classes:
        if _concrete(y) and int(y.min()) == int(y.max()):
            raise ValueError("y has no variance: every sample has the same value "
                             "(a label set with a single class?)")
        dy = num_classes
    else:
        check_embeddings(y, "y")
        dy = y.shape[1]
    if n <= dx + dy:
        raise ValueError(f"too few samples: n={n} must exceed Dx + Dy = {dx} + {dy}, "
                         "or canonical correlations are inflated towards 1")
