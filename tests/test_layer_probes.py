"""Layer-wise probes of a model vs random init and log-mel: scores against known answers."""

import json
import os

import numpy as np
import pytest

from w2v_jax.analysis import layer_probes
from w2v_jax.analysis.probes import speaker_split

CLASSES, SPEAKERS, PER_SPEAKER, WIDTH = 5, 12, 60, 8


def labelled_speakers(seed=0):
    """12 speakers (alternately F and M) of 60 samples each, labels uniform over 5 classes."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(SPEAKERS), PER_SPEAKER)
    sex = speakers % 2
    return rng, speakers, sex, rng.integers(0, CLASSES, len(speakers))


def carrying(rng, labels, noise):
    """Features whose first CLASSES columns are the one-hot label, plus Gaussian noise."""
    x = np.zeros((len(labels), WIDTH), np.float32)
    x[np.arange(len(labels)), labels] = 1.0
    return x + noise * rng.standard_normal(x.shape).astype(np.float32)


def test_speaker_split_keeps_both_strata_on_both_sides():
    _, speakers, sex, _ = labelled_speakers()
    for seed in range(5):
        train, test = speaker_split(speakers, test_fraction=0.5, seed=seed, strata=sex)
        assert not set(speakers[train]) & set(speakers[test]) and np.all(train | test)
        for side in (train, test):
            assert set(sex[side]) == {0, 1} and len(set(speakers[side])) == 6
    with pytest.raises(ValueError, match="more than one stratum"):
        speaker_split(speakers, strata=np.arange(len(speakers)) % 2)
    with pytest.raises(ValueError, match="stratum 1"):  # one M speaker only
        speaker_split(speakers[:3 * PER_SPEAKER], strata=sex[:3 * PER_SPEAKER])


@pytest.mark.slow
def test_label_carrying_features_score_near_one_and_noise_near_chance():
    rng, speakers, sex, labels = labelled_speakers()
    noise = lambda layers, width: rng.standard_normal((layers, len(labels), width)).astype(np.float32)
    # One width and 4 layers in all, here and in the tie below: one compilation.
    features = {"pretrained": np.stack([noise(1, WIDTH)[0], carrying(rng, labels, 0.2)]),
                "random_init": noise(1, WIDTH), "log_mel": noise(1, WIDTH)}
    train, test = speaker_split(speakers, test_fraction=0.5, seed=0, strata=sex)
    out = layer_probes.score_sources(features, labels, speakers, train, test, num_samples=300)

    # Chance by hand: always the training majority class.
    majority = np.bincount(labels[train]).argmax()
    assert out["chance"]["accuracy"] == pytest.approx(np.mean(labels[test] == majority))
    pre, rand, mel = (out["sources"][k] for k in ("pretrained", "random_init", "log_mel"))
    assert pre["best_layer"] == 1 and pre["accuracy"][1] > 0.97 and pre["macro_f1"][1] > 0.97
    for acc in (pre["accuracy"][0], *rand["accuracy"], *mel["accuracy"]):
        assert abs(acc - 1 / CLASSES) < 0.06  # uniform labels: noise guesses at 1 in 5
    for s in (pre, rand, mel):
        assert np.all(np.array(s["low"]) <= s["accuracy"]) and np.all(np.array(s["accuracy"]) <= s["high"])
    for other, s in (("random_init", rand), ("log_mel", mel)):
        v = out["versus"][other]
        assert v["clearly_better"] and v["layers"] == [1, s["best_layer"]]
        assert v["difference"] == pytest.approx(pre["accuracy"][1] - s["accuracy"][s["best_layer"]])
        assert v["low"] > 0.6
    assert out["segments"] == {"train": int(train.sum()), "test": int(test.sum())}

    # Two noise sources: neither beats the other clearly.
    tie = layer_probes.score_sources({"pretrained": noise(2, WIDTH), "random_init": noise(2, WIDTH)},
                                     labels, speakers, train, test, num_samples=300)
    assert not tie["versus"]["random_init"]["clearly_better"]
    assert tie["versus"]["random_init"]["low"] < 0 < tie["versus"]["random_init"]["high"]


@pytest.mark.slow
def test_probe_command_end_to_end(tmp_path):
    from flax import nnx

    from w2v_jax.checkpoint import load_model, save_model
    from w2v_jax.data import synthetic
    from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model

    corpus = tmp_path / "corpus"
    synthetic.make_corpus(corpus, num_speakers=12, utterances_per_speaker=3, seed=0)
    cfg = Wav2Vec2Config.preset("tiny", num_hidden_layers=2)
    save_model(Wav2Vec2Model(cfg, rngs=nnx.Rngs(1)), str(tmp_path / "model"))

    workdir = str(tmp_path / "probes")
    result = layer_probes.run(load_model(str(tmp_path / "model")), str(corpus), workdir,
                              model_name="tiny", num_samples=200)
    assert sorted(os.listdir(workdir)) == ["embeddings", "probes.json", "probes.md", "probes.png",
                                           "probes.svg"]
    with open(os.path.join(workdir, "probes.json")) as f:
        saved = json.load(f)
    assert saved["tasks"].keys() == {"final", "tone", "sex"}
    assert len(saved["speakers"]["test"]) == 6 and not (set(saved["speakers"]["test"])
                                                        & set(saved["speakers"]["train"]))
    for task in saved["tasks"].values():
        assert len(task["sources"]["pretrained"]["accuracy"]) == 3  # input + 2 layers
        assert len(task["sources"]["random_init"]["accuracy"]) == 3
        assert len(task["sources"]["log_mel"]["accuracy"]) == 1
    # The synthetic voices' f0 differ by an octave between the sexes: log-mel tells them apart
    # (the chance interval is wide: per held-out speaker the majority sex is all right or all wrong).
    assert saved["tasks"]["sex"]["sources"]["log_mel"]["accuracy"][0] > 0.7
    assert "Layer-wise profile" in open(os.path.join(workdir, "probes.md")).read()
    assert "clearly" in layer_probes.summary_text(result)


def test_a_corpus_of_one_sex_is_refused():
    _, speakers, _, labels = labelled_speakers()
    table = {"speaker": speakers, "sex": np.zeros_like(speakers), "final": labels, "tone": labels}
    with pytest.raises(layer_probes.DataError, match="one sex only"):
        layer_probes.probe_sources({"pretrained": np.zeros((1, len(labels), 2), np.float32)}, table)
