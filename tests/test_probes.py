"""Linear probes: beat chance on separable data, sit at chance on noise; metrics vs sklearn."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from w2v_jax.analysis.probes import _scores, probe_layers, speaker_split


def corpus(rng, speakers=12, per=40, d=6, classes=4):
    spk = np.repeat(np.arange(speakers), per)
    labels = rng.integers(0, classes, len(spk))
    return spk, labels, rng.standard_normal((len(spk), d)), rng.standard_normal((classes, d))


def test_speaker_split_is_disjoint():
    spk = np.repeat(np.array(["a", "b", "c", "d", "e"]), 3)
    train, test = speaker_split(spk, test_fraction=0.4, seed=1)
    assert not set(spk[train]) & set(spk[test])
    assert np.all(train | test) and len(set(spk[test])) == 2
    with pytest.raises(ValueError, match="2 speakers"):
        speaker_split(np.zeros(4))


@pytest.mark.slow
def test_probes_beat_chance_only_when_there_is_signal():
    rng = np.random.default_rng(0)
    spk, labels, noise, centroids = corpus(rng)
    h = np.stack([noise, noise + 3.0 * centroids[labels]]).astype(np.float32)
    labels[:5] = -1  # ignored frames
    train, test = speaker_split(spk, test_fraction=0.25, seed=0)
    out = probe_layers(h, labels, train, test, steps=50)
    chance = np.max(np.bincount(labels[test & (labels >= 0)])) / np.sum(test & (labels >= 0))
    assert out["accuracy"][1] > 0.95 and out["macro_f1"][1] > 0.95
    assert abs(out["accuracy"][0] - 0.25) < 0.12 and out["accuracy"][0] <= chance + 0.1


def test_scores_match_sklearn():
    rng = np.random.default_rng(1)
    truth, pred = rng.integers(0, 5, 200), rng.integers(0, 4, 200)
    truth[pred == 1] = 1  # make some classes easier
    w = (rng.random(200) < 0.7).astype(np.float32)
    acc, f1, correct = _scores(pred, truth, w, 6)
    keep = w > 0
    np.testing.assert_array_equal(correct, keep & (pred == truth))
    assert float(acc) == pytest.approx(accuracy_score(truth[keep], pred[keep]), abs=1e-6)
    assert float(f1) == pytest.approx(f1_score(truth[keep], pred[keep], average="macro"), abs=1e-6)


def test_probe_rejects_bad_input():
    rng = np.random.default_rng(2)
    spk, labels, noise, _ = corpus(rng, speakers=4, per=10)
    h = noise[None].astype(np.float32)
    train, test = speaker_split(spk, seed=0)
    with pytest.raises(ValueError, match="overlap"):
        probe_layers(h, labels, train, train)
    with pytest.raises(ValueError, match="NaN"):
        probe_layers(h * np.nan, labels, train, test)
    with pytest.raises(ValueError, match="shape"):
        probe_layers(h, labels[:-1], train, test)


def test_probe_rejects_labels_it_cannot_score():
    rng = np.random.default_rng(3)
    spk, labels, noise, _ = corpus(rng, speakers=4, per=10, classes=3)
    h = noise[None].astype(np.float32)
    train, test = speaker_split(spk, seed=0)
    one_class = np.where(np.arange(len(labels)) % 3 == 0, -1, 2)  # -1 is masked, not a class
    with pytest.raises(ValueError, match="only class 2"):  # else accuracy and F1 would be 1.0
        probe_layers(h, one_class, train, test)
    with pytest.raises(ValueError, match="labels reach class 2 but num_classes is 2"):
        probe_layers(h, labels, train, test, num_classes=2)
