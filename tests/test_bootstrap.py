"""Speaker bootstrap: each resample equals the reference on explicitly repeated speakers."""

import jax
import numpy as np
import pytest

from tests import cca_reference as ref
from w2v_jax.analysis.bootstrap import TooFewSpeakers, bootstrap_layers, resample_counts


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    speakers, per, d, classes = 6, 60, 8, 3
    groups = np.repeat(np.array([f"S{i:02d}" for i in rng.permutation(speakers)]), per)
    labels = rng.integers(0, classes, speakers * per)
    centroids = rng.standard_normal((classes, d))
    h = np.stack([s * centroids[labels] + rng.standard_normal((speakers * per, d))
                  + rng.standard_normal((speakers, d))[np.unique(groups, return_inverse=True)[1]]
                  for s in (0.2, 1.0)])
    return h, labels, groups


@pytest.mark.slow
def test_resamples_match_reference_on_repeated_speakers(data):
    h, labels, groups = data
    y = np.eye(3)[labels]
    with jax.enable_x64(True):
        out = bootstrap_layers("svcca", h, labels, groups, num_samples=3, seed=4)
        pw = bootstrap_layers("pwcca", h, labels, groups, num_samples=2, seed=4)
        counts = np.asarray(resample_counts(jax.random.key(4), 6, 3))
    speakers = np.unique(groups)
    np.testing.assert_allclose(out["point"], [ref.svcca_rank(x, y) for x in h], atol=1e-6)
    for b, c in enumerate(counts):
        rows = np.concatenate([np.tile(np.flatnonzero(groups == s), k)
                               for s, k in zip(speakers, c)])
        want = [ref.svcca_rank(x[rows], y[rows]) for x in h]
        np.testing.assert_allclose(out["samples"][b], want, atol=1e-6)
        if b < 2:
            np.testing.assert_allclose(pw["samples"][b], [ref.pwcca(x[rows], y[rows]) for x in h],
                                       atol=1e-6)
    assert out["samples"].shape == (3, 2)


def test_interval_brackets_the_estimate(data):
    h, labels, groups = data
    out = bootstrap_layers("cka", h, labels, groups, num_samples=64, seed=1, ci=0.9)
    assert np.all(out["low"] <= out["high"])
    assert np.all((out["low"] - 0.05 <= out["point"]) & (out["point"] <= out["high"] + 0.05))
    assert out["point"][1] > out["point"][0]  # the stronger layer scores higher


def test_bootstrap_rejects_bad_groups(data):
    h, labels, groups = data
    with pytest.raises(TooFewSpeakers, match="too few speakers: 1"):
        bootstrap_layers("svcca", h, labels, np.zeros(len(labels)))
    with pytest.raises(ValueError, match="one speaker per sample"):
        bootstrap_layers("svcca", h, labels, groups[:-1])


def sex_by_speaker(sizes):
    """Speakers 0..S-1 of the given sizes, sex = speaker % 2, layer 1 carries sex."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    sex = groups % 2
    h = rng.standard_normal((2, len(groups), 8)).astype(np.float32)
    h[1] += sex[:, None]
    return h, sex, groups


def single_sex_resamples(seed, speakers, num_samples):
    """Which resamples draw speakers of one sex only (their sex labels have no variance)."""
    counts = np.asarray(resample_counts(jax.random.key(seed), speakers, num_samples))
    return (counts[:, 0::2].sum(1) == 0) | (counts[:, 1::2].sum(1) == 0)


def test_degenerate_resamples_are_left_out_of_the_interval(caplog):
    # Uneven speakers: a single-sex resample then scores rounding noise near 0, not NaN.
    h, sex, groups = sex_by_speaker([37, 51, 29, 63, 44, 58])
    degenerate = single_sex_resamples(0, 6, 40)
    assert degenerate.sum() == 3  # the seed gives some
    out = bootstrap_layers("svcca", h, sex, groups, num_samples=40, seed=0)
    np.testing.assert_array_equal(out["degenerate"], [3, 3])
    valid = out["samples"][~degenerate]
    assert np.isnan(out["samples"][degenerate]).all() and np.isfinite(valid).all()
    # the basic interval: the resample quantiles reflected about the estimate
    np.testing.assert_allclose(out["low"], 2 * out["point"] - np.quantile(valid, 0.975, axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["high"], 2 * out["point"] - np.quantile(valid, 0.025, axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["mean"], valid.mean(0), rtol=1e-6)
    assert "3 of 40 resamples of 6 speakers are degenerate" in caplog.text


def test_mostly_degenerate_resamples_raise():
    h, sex, groups = sex_by_speaker([60, 60])
    assert single_sex_resamples(6, 2, 4).sum() == 3
    with pytest.raises(TooFewSpeakers, match="3 of 4 resamples of 2 speakers are degenerate"):
        bootstrap_layers("svcca", h, sex, groups, num_samples=4, seed=6, min_speakers=2)


def test_two_speakers_are_too_few_for_an_interval():
    """Two speakers give 3 distinct resamples: once a zero-width band above the curve."""
    h, sex, groups = sex_by_speaker([60, 60])
    with pytest.raises(TooFewSpeakers, match="too few speakers: 2"):
        bootstrap_layers("svcca", h, sex, groups, num_samples=20)


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_bootstrap_rejects_keep_outside_the_unit_interval(data, keep):
    h, labels, groups = data
    with pytest.raises(ValueError, match="keep must lie in"):
        bootstrap_layers("svcca", h, labels, groups, num_samples=2, keep=keep)


def test_rate_bootstrap_matches_explicitly_repeated_speakers():
    """Accuracy over a resample = hits / frames of the speakers drawn, with repeats."""
    from w2v_jax.analysis.bootstrap import rate_bootstrap

    rng = np.random.default_rng(5)
    frames = rng.integers(50, 200, 7)
    right = [rng.random((f, 3)) < [0.5, 0.7, 0.9] for f in frames]  # per frame, 3 layers
    hits = np.stack([r.sum(0) for r in right])
    out = rate_bootstrap(hits, frames, num_samples=25, seed=3)
    counts = np.asarray(resample_counts(jax.random.key(3), 7, 25))
    for b, c in enumerate(counts):
        drawn = np.concatenate([right[g] for g in range(7) for _ in range(c[g])])
        np.testing.assert_allclose(out["samples"][b], drawn.mean(0))
    np.testing.assert_allclose(out["point"], np.concatenate(right).mean(0))
    assert np.all(out["low"] < out["point"]) and np.all(out["point"] < out["high"])
    with pytest.raises(TooFewSpeakers, match="too few speakers: 3"):
        rate_bootstrap(hits[:3], frames[:3])
