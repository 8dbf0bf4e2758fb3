"""Speaker-level (cluster) bootstrap confidence intervals for layer-wise scores.

Frames of one speaker are not independent, so resampling frames understates the
uncertainty; we resample speakers with replacement. Each resample is a vector of
speaker multiplicities, and every metric here is a function of centred moments,
which are sums over speakers: per-speaker moments are computed once (one pass,
the cost of one Gram), and a resample costs a (G x D x D) contraction plus the
metric's D x D eigen-work, all on the device with static shapes.
"""

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from w2v_jax.analysis.cca import pwcca_from_moments, svcca_from_moments
from w2v_jax.analysis.checks import as_targets, check_keep, check_pair
from w2v_jax.analysis.cka import cka_from_moments
from w2v_jax.analysis.moments import (Moments, centre, compute_dtype, cross, full_precision, gram,
                                      label_yy)
from w2v_jax.analysis.sweep import map_layers

METRICS: dict[str, Callable[..., jax.Array]] = {
    "svcca": svcca_from_moments,
    "pwcca": pwcca_from_moments,
    "cka": cka_from_moments,
}
# Fewer speakers give too few distinct resamples (2 speakers: 3) for a 95% interval.
MIN_SPEAKERS = 5


class TooFewSpeakers(ValueError):
    """The speaker bootstrap cannot give an interval: too few speakers or too many
    degenerate resamples. Reported as "undecided: too few speakers", never as an interval."""


def resample_counts(key: jax.Array, num_groups: int, num_samples: int) -> jax.Array:
    """(num_samples, num_groups) multiplicities: draw num_groups groups with replacement."""
    draws = jax.random.randint(key, (num_samples, num_groups), 0, num_groups)
    return jax.vmap(lambda d: jnp.bincount(d, length=num_groups))(draws)


def _group_layout(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices arranged (G, M), M the largest group, padded with -1."""
    codes = np.unique(groups, return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    index = np.full((len(sizes), sizes.max()), -1, np.int32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for g, (s, z) in enumerate(zip(starts, sizes)):
        index[g, :z] = order[s:s + z]
    return index, sizes


def _constant_targets(y: np.ndarray, index: np.ndarray, sizes: np.ndarray,
                      counts: np.ndarray) -> np.ndarray:
    """(num_samples,) bool: whether each resample's targets are one constant row."""
    constant = np.array([np.all(y[rows[:size]] == y[rows[0]]) for rows, size in zip(index, sizes)])
    value = np.unique(y[index[:, 0]], axis=0, return_inverse=True)[1].ravel()  # equal rows, one id
    drawn = counts > 0
    lowest = np.where(drawn, value, value.max()).min(axis=1)
    highest = np.where(drawn, value, value.min()).max(axis=1)
    return np.all(constant | ~drawn, axis=1) & (lowest == highest)


def _by_group(a: jax.Array, index: jax.Array) -> jax.Array:
    """Globally centred rows of a arranged (G, M, D), zeros in the padding."""
    return jnp.where((index >= 0)[..., None], centre(a)[jnp.maximum(index, 0)], 0)


def _sums(ag: jax.Array) -> jax.Array:
    return jnp.sum(ag.astype(compute_dtype()), axis=1)


def _products(ag: jax.Array, bg: jax.Array | None = None) -> jax.Array:
    """Per-group a^T b (G, Da, Db); a^T a when b is None."""
    return jax.vmap(gram)(ag) if bg is None else jax.vmap(cross)(ag, bg)


def _combine(counts, sizes, sx, sxx, sy, syy, sxy, eps_x, eps_y, class_counts=None) -> Moments:
    """Centred moments of the resample that takes group g counts[g] times.

    With class_counts (G, C) y is one-hot labels: sy, syy are unused, sxy (G, Dx, C)
    holds per-group class sums of x, and the label moments are exact from the counts.
    """
    c = counts.astype(compute_dtype())
    n = c @ sizes
    mx = c @ sx / n
    contract = lambda s: jnp.tensordot(c, s, axes=1)
    xx = contract(sxx) - n * jnp.outer(mx, mx)
    if class_counts is not None:
        y_counts = c @ class_counts
        return Moments(n=n, xx=xx, yy=label_yy(y_counts, n),
                       xy=contract(sxy) - jnp.outer(mx, y_counts),
                       xx_eps=eps_x, yy_eps=eps_y, y_counts=y_counts)
    my = c @ sy / n
    return Moments(n=n, xx=xx, yy=contract(syy) - n * jnp.outer(my, my),
                   xy=contract(sxy) - n * jnp.outer(mx, my), xx_eps=eps_x, yy_eps=eps_y)


@partial(jax.jit, static_argnames=("num_classes", "metric", "batch_size", "kwargs"))
@full_precision
def _bootstrap_jit(h, y, num_classes, index, sizes, counts, metric, batch_size, kwargs):
    score = METRICS[metric] if isinstance(metric, str) else metric
    eps_x = float(jnp.finfo(h.dtype).eps)
    sizes = sizes.astype(compute_dtype())
    if num_classes:
        members = jax.nn.one_hot(jnp.where(index >= 0, y[jnp.maximum(index, 0)], -1),
                                 num_classes, dtype=compute_dtype())  # (G, M, C), padding 0
        class_counts, sy, syy, eps_y = jnp.sum(members, axis=1), None, None, eps_x
    else:
        yg = _by_group(y, index)
        sy, syy, class_counts = _sums(yg), _products(yg), None
        eps_y = float(jnp.finfo(y.dtype).eps)

    def layer(x):
        xg = _by_group(x, index)
        sx, sxx = _sums(xg), _products(xg)
        if num_classes:  # per-group class sums of globally centred x, (G, Dx, C)
            sxy = jnp.einsum("gmd,gmc->gdc", xg.astype(compute_dtype()), members)
        else:
            sxy = _products(xg, yg)
        one = lambda c: score(_combine(c, sizes, sx, sxx, sy, syy, sxy, eps_x, eps_y,
                                       class_counts), **dict(kwargs))
        return jax.vmap(one)(counts)

    return map_layers(layer, h, batch_size)


def interval(point: np.ndarray, samples: np.ndarray, ci: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray]:
    """The basic (pivotal) bootstrap interval [2 t - q_hi, 2 t - q_lo] over axis 0.

    Resampling speakers repeats their frames, which inflates a CCA score (fewer
    distinct samples fit better): percentiles of the resamples then sit above the
    estimate. The basic interval reflects them about it, cancelling that shift.
    NaN samples (degenerate resamples) are left out.
    """
    tail = (1.0 - ci) / 2.0
    q_lo, q_hi = np.nanquantile(samples, tail, axis=0), np.nanquantile(samples, 1 - tail, axis=0)
    return 2 * point - q_hi, 2 * point - q_lo


def bootstrap_layers(metric: str | Callable[..., jax.Array], h: jax.Array, y: jax.Array,
                     groups: np.ndarray, *, num_samples: int = 200, seed: int = 0,
                     ci: float = 0.95, batch_size: int | None = 1,
                     min_speakers: int = MIN_SPEAKERS,
                     **metric_kwargs) -> dict[str, np.ndarray]:
    """Per-layer score with a speaker-resampling bootstrap interval.

    Args:
      metric: "svcca", "pwcca", "cka", or a function of a `Moments` (hashable).
      h: (L, N, D) embeddings; y: (N, Dy) targets or 1-D integer labels (no -1).
      groups: (N,) speaker id of each sample (any hashable numpy values).
      num_samples: bootstrap resamples; seed: their PRNG seed; ci: interval mass;
      min_speakers: fewer speakers raise TooFewSpeakers.
      batch_size: layers in flight; each holds G x D x D per-speaker moments.
      **metric_kwargs: passed to the metric (keep, epsilon, mode for svcca); they
        are static, so new values recompile.

    Returns:
      dict of numpy arrays: "point" (L,) the full-data score; "mean" (L,) the
      bootstrap mean and "low", "high" (L,) the basic bootstrap interval (see
      `interval`) over the resamples that are not degenerate; "samples" (B, L),
      NaN for degenerate resamples; "degenerate" (L,) how many were left out;
      "groups" (G,) the sorted speaker ids resampled (the same ids and seed give
      the same resamples, so statistics of two stores pair resample by resample).

    Raises:
      TooFewSpeakers: fewer than min_speakers speakers, more than half of the
        resamples degenerate (e.g. too few speakers of each class), or an
        interval of zero width.
      ValueError: bad groups, ci or keep.
    """
    h, (y, num_classes) = jnp.asarray(h), as_targets(y)
    check_pair(h, y, num_classes, batch_dims=1)
    groups = np.asarray(groups)
    if groups.shape != (h.shape[1],):
        raise ValueError(f"groups must give one speaker per sample: shape {groups.shape}, "
                         f"expected ({h.shape[1]},)")
    index, sizes = _group_layout(groups)
    if len(sizes) < min_speakers:
        raise TooFewSpeakers(f"too few speakers: {len(sizes)}, a speaker bootstrap needs at "
                             f"least {min_speakers}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if "keep" in metric_kwargs:
        metric_kwargs["keep"] = check_keep(metric_kwargs["keep"])
    counts = resample_counts(jax.random.key(seed), len(sizes), num_samples)
    counts = jnp.concatenate([jnp.ones((1, len(sizes)), counts.dtype), counts])
    scores = np.asarray(_bootstrap_jit(h, y, num_classes, jnp.asarray(index), jnp.asarray(sizes),
                                       counts, metric, batch_size,
                                       tuple(sorted(metric_kwargs.items())))).T
    boot = scores[1:]
    targets = np.asarray(y)[:, None] if num_classes else np.asarray(y)
    constant = _constant_targets(targets, index, sizes, np.asarray(counts[1:]))
    # A non-finite score is undefined as well, whatever the cause.
    boot = np.where(constant[:, None] | ~np.isfinite(boot), np.nan, boot)
    degenerate = np.sum(np.isnan(boot), axis=0)
    worst = int(degenerate.max())
    what = (f"speaker bootstrap: {worst} of {num_samples} resamples of {len(sizes)} speakers "
            "are degenerate (targets without variance, e.g. every speaker drawn holds one class)")
    if worst * 2 > num_samples:
        raise TooFewSpeakers(f"{what}, too many for an interval; use more speakers of each class")
    if worst:
        logging.warning("%s; the interval uses the other %d", what, num_samples - worst)
    low, high = interval(scores[0], boot, ci)
    if np.any(high <= low):
        raise TooFewSpeakers(f"speaker bootstrap over {len(sizes)} speakers gives an interval "
                             "of zero width: the resamples do not vary")
    return {"point": scores[0], "mean": np.nanmean(boot, axis=0), "low": low, "high": high,
            "samples": boot, "degenerate": degenerate, "groups": np.unique(groups)}


def rate_bootstrap(hits: np.ndarray, totals: np.ndarray, *, num_samples: int = 200, seed: int = 0,
                   ci: float = 0.95, min_speakers: int = MIN_SPEAKERS) -> dict[str, np.ndarray]:
    """A rate sum(hits) / sum(totals) (e.g. accuracy) with a speaker-bootstrap interval.

    hits: (G, ...) per speaker (e.g. frames right, per layer); totals: (G,) per speaker,
    in sorted speaker order, so the resamples are those of `bootstrap_layers` with the
    same speakers and seed. Returns {"point", "low", "high"} (...) and "samples" (B, ...).
    Raises TooFewSpeakers under min_speakers speakers.
    """
    hits, totals = np.asarray(hits, float), np.asarray(totals, float)
    if len(totals) < min_speakers:
        raise TooFewSpeakers(f"too few speakers: {len(totals)}, a speaker bootstrap needs at "
                             f"least {min_speakers}")
    counts = np.asarray(resample_counts(jax.random.key(seed), len(totals), num_samples), float)
    flat = hits.reshape(len(totals), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (counts @ flat) / (counts @ totals)[:, None]
    samples = samples.reshape((num_samples,) + hits.shape[1:])
    point = hits.sum(axis=0) / totals.sum()
    low, high = interval(point, samples, ci)
    return {"point": point, "low": low, "high": high, "samples": samples}
