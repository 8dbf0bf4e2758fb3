"""Centred second moments: the only pass over the N samples every metric needs.

SVCCA, PWCCA and linear CKA are all functions of (n, Xc^T Xc, Yc^T Yc, Xc^T Yc),
so each metric reads the (N, D) data once here and then works on D x D matrices.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST
_GRAM_BLOCKS = 4  # column blocks of the symmetric Gram: 10 of 16 block products


class Moments(NamedTuple):
    """Centred sums of products (not divided by n).

    n: total weight (number of samples); xx: (Dx, Dx); yy: (Dy, Dy); xy: (Dx, Dy),
    all in the compute dtype. xx_eps / yy_eps: machine epsilon of the dtype xx / yy
    were accumulated in, which sets the rank tolerance of their spectra.
    y_counts: (C,) class counts when y is one-hot labels (`label_moments`), else None.
    Then yy is exact (diag(counts) - counts counts^T / n), xy[:, c] is the sum of
    centred x over class c, and y's rank is known exactly (classes present - 1), so
    no tolerance decides it.
    """

    n: jax.Array
    xx: jax.Array
    yy: jax.Array
    xy: jax.Array
    xx_eps: float
    yy_eps: float
    y_counts: jax.Array | None = None


def full_precision(fn):
    """Trace fn with float32 matmuls at full precision: GPUs default to TF32 and
    TPUs to bf16 passes, which would cost three digits of every score."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def compute_dtype() -> jnp.dtype:
    """float64 when x64 is enabled, else float32: the dtype of every D x D stage."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def centre(a: jax.Array) -> jax.Array:
    """Subtract the mean over samples (axis 0), accumulated in the compute dtype.

    Centring before the Gram matters in float32: subtracting n * mean mean^T from
    an uncentred Gram cancels catastrophically when the mean is large.
    """
    a = _floating(a)
    return a - _mean(a)


def _floating(a: jax.Array) -> jax.Array:
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(compute_dtype())


def _mean(a: jax.Array) -> jax.Array:
    """The column means, accumulated in the compute dtype, in a's dtype."""
    return jnp.mean(a, axis=0, dtype=compute_dtype()).astype(a.dtype)


def _chunk_rows(width: int) -> int:
    """Rows per accumulation chunk. XLA's CPU dot sums a narrow product (a Gram of
    a few label columns) sequentially over all N rows, so its rounding grows like
    N * eps (measured ~5000 eps at N = 200k, enough to fake a rank); short chunks
    cap that cheaply. Wide products keep long chunks for GEMM efficiency."""
    return 128 if width <= 64 else 2048


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=_HIGHEST)


def _gram(parts: list[jax.Array], means: list[jax.Array | None], dtype,
          labels: jax.Array | None = None, num_classes: int = 0):
    """G = A^T A for A = [parts[0] - means[0] | parts[1] - means[1] | ...] (N, D).

    With integer `labels` (N,), returns (G, S) where S (num_classes, D) holds the
    per-class sums of A's rows, accumulated in the same pass.

    Row chunks of A are built inside the loop (each part centred in its own dtype, then
    cast to `dtype`), so neither a centred copy nor the concatenation exists whole.
    XLA has no syrk: each chunk adds only the upper block triangle (10 of 16 block
    products), kept as block rows in the compute dtype and mirrored once at the end.
    """
    n, d = parts[0].shape[0], sum(p.shape[1] for p in parts)
    chunked = [_chunked(p, d) for p in parts]
    chunks, rows = chunked[0].shape[:2]
    edges = np.linspace(0, d, min(_GRAM_BLOCKS, d) + 1).astype(int)
    cdt = compute_dtype()
    with_labels = labels is not None
    if with_labels:
        chunked.append(_chunked(labels[:, None], d)[..., 0])

    def add(totals, inputs):
        start, pieces = inputs
        block = jnp.concatenate([(p if m is None else p - m).astype(dtype)
                                 for p, m in zip(pieces, means)], axis=1)
        if any(m is not None for m in means):  # padding rows must stay zero
            block = jnp.where((start + jnp.arange(rows) < n)[:, None], block, 0)
        new = [t + _dot(block[:, lo:hi], block[:, lo:]).astype(cdt)
               for t, lo, hi in zip(totals, edges[:-1], edges[1:])]
        if with_labels:
            member = jax.nn.one_hot(pieces[-1], num_classes, dtype=dtype)
            new.append(totals[-1] + _dot(member, block).astype(cdt))
        return new, None

    init = [jnp.zeros((hi - lo, d - lo), cdt) for lo, hi in zip(edges[:-1], edges[1:])]
    if with_labels:
        init.append(jnp.zeros((num_classes, d), cdt))
    totals, _ = jax.lax.scan(add, init, (jnp.arange(chunks) * rows, chunked))
    sums = totals.pop() if with_labels else None
    upper = jnp.concatenate([jnp.pad(t, ((0, 0), (lo, 0))) for t, lo in zip(totals, edges)])
    g = jnp.triu(upper) + jnp.triu(upper, 1).T
    return (g, sums) if with_labels else g


def cross(a: jax.Array, b: jax.Array) -> jax.Array:
    """a^T b (Da, Db) in the compute dtype; products in the promoted input dtype."""
    dt = jnp.promote_types(a.dtype, b.dtype)
    width = min(a.shape[1], b.shape[1])
    a, b = _chunked(a.astype(dt), width), _chunked(b.astype(dt), width)
    # One batched (b^T a) over the chunks, summed after: a scan of small dots, or a with
    # the wide operand on the left, ran 10-20x slower on XLA's CPU dot (N = 20k, D = 1024).
    per_chunk = jax.lax.dot_general(b, a, (((1,), (1,)), ((0,), (0,))), precision=_HIGHEST)
    return jnp.sum(per_chunk.astype(compute_dtype()), axis=0).T


def _chunked(t: jax.Array, width: int) -> jax.Array:
    """(N, D) -> (chunks, rows, D), zero-padded: zero rows add nothing to a product."""
    n = t.shape[0]
    chunks = max(1, -(-n // _chunk_rows(width)))
    rows = -(-n // chunks)
    return jnp.pad(t, ((0, rows * chunks - n), (0, 0))).reshape(chunks, rows, -1)


def gram(a: jax.Array) -> jax.Array:
    """a^T a (D, D) in the compute dtype; products in a's dtype."""
    return _gram([a], [None], a.dtype)


def centred_moments(x: jax.Array, y: jax.Array) -> Moments:
    """Moments of x (N, Dx) and y (N, Dy), from one Gram of [Xc | Yc].

    The products run in x's dtype, summed over row chunks in the compute dtype:
    float32 embeddings keep the dominant N x D x D work in float32 while the D x D
    stages after it run in float64 under x64 (float32 eigenvectors of a Gram with
    outlier dimensions cost up to 1e-4 of an SVCCA score; float64 ones 1e-7).
    One Gram instead of three products reads the N x D data once for the same
    flops: x^T y rides along as the last columns. Each side is centred chunk by
    chunk in its own dtype before the cast, which keeps a one-hot's null direction
    at rounding level.
    """
    x, y = _floating(x), _floating(y)
    joint = _gram([x, y], [_mean(x), _mean(y)], x.dtype)
    d = x.shape[1]
    eps = float(jnp.finfo(x.dtype).eps)
    return Moments(n=jnp.asarray(x.shape[0], compute_dtype()), xx=joint[:d, :d],
                   yy=joint[d:, d:], xy=joint[:d, d:], xx_eps=eps, yy_eps=eps)


def label_yy(counts: jax.Array, n: jax.Array) -> jax.Array:
    """Yc^T Yc of a one-hot with these class counts, exactly: diag(counts) - counts counts^T / n."""
    return jnp.diag(counts) - jnp.outer(counts, counts) / n


def label_moments(x: jax.Array, labels: jax.Array, num_classes: int) -> Moments:
    """Moments of x (N, Dx) and the one-hot of integer `labels` (N,) in [0, num_classes).

    The label side is formed from class counts, not from a Gram of the one-hot:
    a Gram's null direction carries rounding (2e-6 of the largest eigenvalue for
    float32, N = 20k, five classes) that a rank tolerance can take for signal,
    which scored every layer at 4/5 of its value. The one pass over x also
    accumulates the class sums of centred x (xy), cheaper than C extra Gram columns.
    """
    x = _floating(x)
    xx, sums = _gram([x], [_mean(x)], x.dtype, labels=labels, num_classes=num_classes)
    counts = jnp.zeros(num_classes, compute_dtype()).at[labels].add(1.0)
    n = jnp.asarray(x.shape[0], compute_dtype())
    eps = float(jnp.finfo(x.dtype).eps)
    return Moments(n=n, xx=xx, yy=label_yy(counts, n), xy=sums.T, xx_eps=eps, yy_eps=eps,
                   y_counts=counts)


def moments_of(x: jax.Array, y: jax.Array, num_classes: int = 0) -> Moments:
    """`label_moments` for labels (num_classes > 0, see `checks.as_targets`), else `centred_moments`."""
    return label_moments(x, y, num_classes) if num_classes else centred_moments(x, y)
