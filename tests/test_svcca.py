"""SVCCA / PWCCA / CKA kernels against independent numpy references (cca_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import cca_reference as ref
from w2v_jax.analysis import cka, cka_layers, one_hot, pwcca, pwcca_layers, svcca, svcca_layers
from w2v_jax.analysis import cca as cca_module


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def labelled(rng, n, d, classes, signal=0.7, rank=None):
    """Embeddings with some class information, a mean offset and an uneven spectrum."""
    labels = rng.integers(0, classes, n)
    labels[:classes] = np.arange(classes)  # every class present
    r = rank or d
    mix = rng.standard_normal((r, d)) * (np.arange(1, r + 1) ** -0.7)[:, None]
    x = rng.standard_normal((n, r)) @ mix
    x += signal * rng.standard_normal((classes, d))[labels] + 5.0
    return x, labels


SHAPES = [  # (n, d, classes, rank of x)
    (300, 12, 2, None),
    (400, 16, 5, None),
    (900, 24, 38, None),
    (400, 16, 5, 6),  # rank-deficient x
]


@pytest.mark.parametrize("n,d,classes,rank", SHAPES)
def test_svcca_matches_numpy_svd_recipe(x64, n, d, classes, rank):
    rng = np.random.default_rng(n + classes)
    x, labels = labelled(rng, n, d, classes, rank=rank)
    y = np.eye(classes)[labels]
    got = svcca(jnp.asarray(x), one_hot(jnp.asarray(labels), classes))
    assert got.dtype == jnp.float64 and got.shape == ()
    assert abs(float(got) - ref.svcca_rank(x, y)) <= 1e-6
    # integer labels are one-hot encoded by the wrapper
    assert abs(float(svcca(x, labels)) - float(got)) <= 1e-12
    for keep in (0.5, 1.0):
        assert abs(float(svcca(x, y, keep=keep)) - ref.svcca_rank(x, y, keep)) <= 1e-6


@pytest.mark.parametrize("n,d,classes,rank", SHAPES)
def test_google_mode_matches_get_cca_similarity(x64, n, d, classes, rank):
    rng = np.random.default_rng(7 * n + classes)
    x, labels = labelled(rng, n, d, classes, rank=rank)
    y = np.eye(classes)[labels]
    got = float(svcca(x, y, mode="google"))
    assert abs(got - ref.svcca_google(x, y)) <= 1e-6
    # the degenerate (null) direction of the centred one-hot counts as a ~0 coefficient
    m = min(ref.kept_dims(x), classes)
    assert got == pytest.approx(ref.svcca_rank(x, y) * min(ref.kept_dims(x), classes - 1) / m,
                                abs=1e-6)


def test_layer_against_layer(x64):
    rng = np.random.default_rng(3)
    x, _ = labelled(rng, 500, 10, 3)
    y = x @ rng.standard_normal((10, 8)) + 0.5 * rng.standard_normal((500, 8))
    assert abs(float(svcca(x, y)) - ref.svcca_rank(x, y)) <= 1e-6
    assert abs(float(svcca(x, y, mode="google")) - ref.svcca_google(x, y)) <= 1e-6


def test_float32_drops_the_one_hot_null_direction():
    """In float32 a centred one-hot's null direction is ~1e-4 of the largest, not 0."""
    rng = np.random.default_rng(11)
    x, labels = labelled(rng, 2000, 16, 2, signal=0.3)
    got = svcca(x.astype(np.float32), labels)
    assert got.dtype == jnp.float32
    want = ref.svcca_rank(x.astype(np.float32), np.eye(2)[labels])
    assert abs(float(got) - want) <= 1e-4  # counting the null direction would halve it


def test_invariances(x64):
    rng = np.random.default_rng(5)
    x, labels = labelled(rng, 400, 16, 5)
    y = np.eye(5)[labels]
    base = float(svcca(x, y))
    rot = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    perm = rng.permutation(400)
    assert float(svcca(x @ rot, y)) == pytest.approx(base, abs=1e-9)
    assert float(svcca(37.0 * x - 3.0, y)) == pytest.approx(base, abs=1e-9)
    assert float(svcca(x, y[:, rng.permutation(5)])) == pytest.approx(base, abs=1e-9)
    assert float(svcca(x[perm], y[perm])) == pytest.approx(base, abs=1e-9)


def test_identical_inputs_score_one(x64):
    rng = np.random.default_rng(6)
    x, labels = labelled(rng, 400, 16, 5)
    assert float(svcca(x, x)) == pytest.approx(1.0, abs=1e-9)
    y = np.eye(5)[labels]
    assert float(svcca(y, y, keep=1.0)) == pytest.approx(1.0, abs=1e-9)
    assert float(pwcca(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(cka(x, x)) == pytest.approx(1.0, abs=1e-9)


def test_independent_noise_scores_near_zero(x64):
    """For independent data, Qx^T Qy (k x r) has i.i.d. entries of variance 1/(n-1), so the
    sum of squared correlations is ~ chi2(kr)/(n-1): bound it at mean + 6 sd, then by
    Cauchy-Schwarz the mean of the m = min(k, r) correlations is <= sqrt(that / m)."""
    rng = np.random.default_rng(8)
    n, d, classes = 3000, 20, 5
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, classes, n)
    k, r = ref.kept_dims(x), classes - 1
    bound = np.sqrt((k * r + 6 * np.sqrt(2 * k * r)) / ((n - 1) * min(k, r)))
    got = float(svcca(x, labels))
    assert got < bound < 0.2
    assert float(cka(x, labels)) < 0.01


@pytest.mark.slow
def test_kept_dimensions_do_not_recompile(x64):
    rng = np.random.default_rng(9)
    layers, n, d = 4, 300, 12
    labels = rng.integers(0, 3, n)
    decays = np.linspace(0.2, 3.0, layers)[:, None, None]
    h = rng.standard_normal((layers, n, d)) * np.arange(1, d + 1) ** -decays
    kept = {ref.kept_dims(layer) for layer in h}
    assert len(kept) > 1  # the layers really keep different numbers of directions
    y = np.eye(3)[labels]
    cca_module._svcca_layers_jit.clear_cache()
    got = svcca_layers(h, y)
    np.testing.assert_allclose(got, [ref.svcca_rank(layer, y) for layer in h], atol=1e-6)
    svcca_layers(h[::-1], y, keep=0.9)
    svcca_layers(2.0 * h, y, keep=0.5)
    svcca_layers(h, y, keep=1)  # an int keep shares the float program
    svcca_layers(h, y, keep=1.0)
    assert cca_module._svcca_layers_jit._cache_size() == 1
    cca_module._pwcca_layers_jit.clear_cache()
    pwcca_layers(h, y, keep=1)
    pwcca_layers(h, y, keep=0.9)
    assert cca_module._pwcca_layers_jit._cache_size() == 1


@pytest.mark.slow
def test_layer_variants_match_references(x64):
    rng = np.random.default_rng(10)
    h = np.stack([labelled(rng, 300, 10, 4, signal=s)[0] for s in (0.1, 0.5, 2.0)])
    labels = rng.integers(0, 4, 300)
    h += np.eye(4)[labels] @ rng.standard_normal((4, 10))
    y = np.eye(4)[labels]
    # batch sizes 2 (the last group of 3 layers shifted back to overlap) and 1
    np.testing.assert_allclose(svcca_layers(h, y, mode="google", batch_size=2),
                               [ref.svcca_google(x, y) for x in h], atol=1e-6)
    np.testing.assert_allclose(svcca_layers(h, y, batch_size=1),
                               [ref.svcca_rank(x, y) for x in h], atol=1e-6)
    np.testing.assert_allclose(pwcca_layers(h, y), [ref.pwcca(x, y) for x in h], atol=1e-6)
    np.testing.assert_allclose(cka_layers(h, y), [ref.cka(x, y) for x in h], atol=1e-9)


@pytest.mark.parametrize("keep", [1.0, 0.99])
def test_pwcca_and_cka_match_references(x64, keep):
    rng = np.random.default_rng(12)
    x, labels = labelled(rng, 400, 16, 5)
    y = np.eye(5)[labels]
    assert abs(float(pwcca(x, y, keep=keep)) - ref.pwcca(x, y, keep)) <= 1e-6
    other = x @ rng.standard_normal((16, 6)) + rng.standard_normal((400, 6))
    assert abs(float(pwcca(x, other, keep=keep)) - ref.pwcca(x, other, keep)) <= 1e-6
    assert abs(float(cka(x, other)) - ref.cka(x, other)) <= 1e-9
    assert abs(float(cka(x, labels)) - ref.cka(x, y)) <= 1e-9


def test_kernels_jit_and_vmap(x64):
    """The kernels compose with a caller's jit (no data checks on tracers)."""
    rng = np.random.default_rng(13)
    x, labels = labelled(rng, 300, 8, 3)
    y = one_hot(jnp.asarray(labels), 3)
    got = jax.jit(lambda a, b: svcca(a, b))(x, y)
    assert float(got) == pytest.approx(ref.svcca_rank(x, np.asarray(y)), abs=1e-6)


BAD = {
    "different N": (lambda x, y: (x[:-1], y), "samples"),
    "single class": (lambda x, y: (x, np.zeros(len(x), int)), "no variance"),
    "constant y": (lambda x, y: (x, np.ones_like(y)), "no variance"),
    "NaN": (lambda x, y: (np.where(np.arange(len(x))[:, None] == 3, np.nan, x), y), "NaN"),
    "inf": (lambda x, y: (x * np.inf, y), "NaN or inf"),
    "n <= Dx + Dy": (lambda x, y: (x[:19], y[:19]), "too few samples"),
    "ignore label": (lambda x, y: (x, np.where(np.arange(len(x)) == 0, -1, y.argmax(1))),
                     "ignore label"),
    "1-D float y": (lambda x, y: (x, y[:, 0]), "must be"),
    "integer x": (lambda x, y: (x.astype(int), y), "floating"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("fn", [svcca, pwcca, cka])
def test_bad_input_raises(case, fn):
    rng = np.random.default_rng(0)
    x, labels = labelled(rng, 60, 16, 3)
    make, message = BAD[case]
    bx, by = make(x.astype(np.float32), np.eye(3, dtype=np.float32)[labels])
    with pytest.raises(ValueError, match=message):
        fn(bx, by)


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, 5.0, np.nan])
@pytest.mark.parametrize("fn", [svcca, svcca_layers, pwcca, pwcca_layers])
def test_keep_outside_the_unit_interval_raises(fn, keep):
    """Unchecked, keep > 1 acted as 1 and keep <= 0 or NaN kept a single direction."""
    rng = np.random.default_rng(0)
    x, labels = labelled(rng, 60, 4, 3)
    with pytest.raises(ValueError, match="keep must lie in"):
        fn(x[None] if fn in (svcca_layers, pwcca_layers) else x, labels, keep=keep)


def test_bad_layers_and_labels_raise():
    h = np.zeros((2, 50, 4), np.float32) + np.random.default_rng(0).standard_normal((2, 50, 4))
    with pytest.raises(ValueError, match="dims"):
        svcca_layers(h[0], np.arange(50) % 2)
    with pytest.raises(ValueError, match="samples"):
        svcca_layers(h, np.arange(49) % 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        one_hot(jnp.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="mode"):
        svcca(h[0], np.arange(50) % 2, mode="nope")


def _class_counts(rng, n, classes, skewed):
    """Class counts summing to n: nearly balanced, or geometric down to a single segment."""
    if skewed:
        weights = 0.8 ** np.arange(classes)
        counts = np.maximum(1, np.floor(weights / weights.sum() * n)).astype(int)
    else:
        counts = np.full(classes, n // classes) + rng.integers(-n // (20 * classes), n // (20 * classes) + 1, classes)
    counts[0] += n - counts.sum()
    return counts


RANK_CASES = [  # (seed, n, classes, skewed)
    (0, 2_000, 2, False), (1, 5_000, 2, True), (2, 20_000, 5, False), (3, 20_000, 5, True),
    (4, 50_000, 12, True), (5, 100_000, 40, False), (6, 200_000, 40, True),
    (7, 200_000, 2, False), (8, 3_000, 40, True),
]


@pytest.mark.parametrize("use_x64", [False, True])
@pytest.mark.parametrize("seed,n,classes,skewed", RANK_CASES)
def test_rank_mode_equals_float64_reference(use_x64, seed, n, classes, skewed):
    """Float32 embeddings, many class counts and N: the labels' rank is exact (issue #14.8);
    a tolerance on a one-hot Gram's spectrum once counted its null direction."""
    rng = np.random.default_rng(seed)
    counts = _class_counts(rng, n, classes, skewed)
    labels = rng.permutation(np.repeat(np.arange(classes), counts))
    d = 16
    x = (rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.5
         + 0.5 * rng.standard_normal((classes, d))[labels] + 3.0).astype(np.float32)
    want = ref.svcca_rank(x, np.eye(classes)[labels])
    with jax.enable_x64(use_x64):
        got = float(svcca(x, labels))
        from_one_hot = float(svcca(x, one_hot(jnp.asarray(labels), classes)))
    assert got == pytest.approx(want, abs=1e-6 if use_x64 else 2e-5)
    assert from_one_hot == got


@pytest.mark.slow
@pytest.mark.parametrize("use_x64", [False, True])
def test_issue_case_wide_float32_five_balanced_classes(use_x64):
    """The reported case: width 1024, N = 20,000, counts 4026/3953/3995/4015/4011, x64 on:
    the labels' null direction passed the tolerance and scored every layer at 4/5."""
    rng = np.random.default_rng(14)
    counts = [4026, 3953, 3995, 4015, 4011]
    labels = rng.permutation(np.repeat(np.arange(5), counts))
    n, d = len(labels), 1024
    x = (0.05 * rng.standard_normal((n, d)) + rng.standard_normal((5, d))[labels]).astype(np.float32)
    # Reference from the definition: the CCA of x's top directions (here: all, x is full rank
    # and keep=1) with the one-hot is the between-class share of each direction's variance.
    with jax.enable_x64(use_x64):
        got = float(svcca(x, labels, keep=1.0))
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    q = np.linalg.qr(xc)[0]
    y = np.eye(5)[labels]
    qy = np.linalg.qr(y - y.mean(0))[0][:, :4]
    want = float(np.mean(np.linalg.svd(q.T @ qy, compute_uv=False)[:4]))
    assert want > 0.99
    assert got == pytest.approx(want, abs=1e-5)


def test_google_mode_needs_x64():
    rng = np.random.default_rng(0)
    x, labels = labelled(rng, 500, 16, 5)
    with jax.enable_x64(False), pytest.raises(ValueError, match="needs float64"):
        svcca(x.astype(np.float32), one_hot(jnp.asarray(labels), 5), mode="google")
