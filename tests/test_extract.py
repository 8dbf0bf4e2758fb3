"""Extraction: the stored rows are the model's own hidden states at each segment's central frame."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (session fixture)
from w2v_jax import sharding
from w2v_jax.analysis.extract import extract
from w2v_jax.analysis.store import Store
from w2v_jax.data import labels as L
from w2v_jax.data.sources import corpus_split
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model


@pytest.fixture(scope="module")
def tiny_model():
    return Wav2Vec2Model(Wav2Vec2Config.preset("tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def test_split(synthetic_corpus, tiny_model):  # noqa: F811
    return corpus_split(synthetic_corpus, "test", tiny_model.config)


def reference_rows(model, data, num_utterances=3):
    """Utterances alone, unpadded, through the model; rows at their central frames."""
    rows = {}
    for example in list(data.source)[:num_utterances]:
        audio = example["audio"].astype(np.float32) / 32768.0
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # the pipeline's normalisation
        out = jax.jit(lambda x: model(x))(audio[None])
        for k, frame in enumerate(example["segments"]["frame"]):
            rows[(str(example["id"]), k)] = np.stack([h[0, frame] for h in out.hidden_states])
    return rows


def test_store_rows_equal_the_models_hidden_states(tmp_path, tiny_model, test_split):
    out = str(tmp_path / "store")
    store = extract(tiny_model, test_split, out, batch_size=8, mesh=sharding.make_mesh())
    assert len(store) == test_split.num_segments.sum()
    assert store.num_layers == tiny_model.config.num_hidden_layers + 1
    expected = reference_rows(tiny_model, test_split)
    layers = store.layers()
    keys = list(zip(store.table["utterance"], store.table["segment"].tolist()))
    assert len(set(keys)) == len(keys)
    checked = [i for i, key in enumerate(keys) if key in expected]
    assert len(checked) == len(expected) > 10
    for i in checked:
        # Batched with padding vs alone: the same function, so float32 rounding only.
        np.testing.assert_allclose(layers[:, i], expected[keys[i]], atol=2e-4, rtol=1e-4)
    # Labels travel with the rows: a final's tone, every row's sex.
    finals = store.table["final"] >= 0
    assert finals.any() and (store.table["tone"][finals] >= 0).all()
    assert set(store.table["sex_label"]) <= set(L.SEXES)
    np.testing.assert_allclose(store.table["time"], (320 * store.table["frame"] + 200) / 16000, atol=1e-4)


def test_rerun_reuses_a_complete_store_and_refuses_another_model(tmp_path, tiny_model, test_split):
    out = str(tmp_path / "store")
    extract(tiny_model, test_split, out, batch_size=8)
    mtime = os.path.getmtime(os.path.join(out, "store.json"))
    extract(tiny_model, test_split, out, batch_size=8)  # same model and split: nothing to do
    assert os.path.getmtime(os.path.join(out, "store.json")) == mtime
    other = Wav2Vec2Model(Wav2Vec2Config.preset("tiny"), rngs=nnx.Rngs(1))
    with pytest.raises(FileExistsError, match="another model"):
        extract(other, test_split, out, batch_size=8)


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, tiny_model, test_split, monkeypatch):
    whole = extract(tiny_model, test_split, str(tmp_path / "whole"), batch_size=4,
                    mesh=sharding.make_mesh(devices=jax.devices()[:1]))
    out = str(tmp_path / "resumed")
    calls = {"n": 0}
    real_put = jax.make_array_from_process_local_data

    def failing_put(*args):
        calls["n"] += 1
        if calls["n"] > 3:  # dies in the second batch, after progress was saved at the first
            raise KeyboardInterrupt
        return real_put(*args)

    monkeypatch.setattr(jax, "make_array_from_process_local_data", failing_put)
    one_device = sharding.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_model, test_split, out, batch_size=4, checkpoint_every=1, mesh=one_device)
    monkeypatch.undo()
    assert not os.path.exists(out) and os.path.exists(out + ".partial")
    with pytest.raises(FileNotFoundError, match="unfinished"):
        Store(out)
    resumed = extract(tiny_model, test_split, out, batch_size=4, checkpoint_every=1, mesh=one_device)
    np.testing.assert_array_equal(resumed.layers(), whole.layers())
    np.testing.assert_array_equal(resumed.table["utterance"], whole.table["utterance"])


def test_bfloat16_store(tmp_path, tiny_model, test_split):
    f32 = extract(tiny_model, test_split, str(tmp_path / "f32"), batch_size=8)
    bf16 = extract(tiny_model, test_split, str(tmp_path / "bf16"), batch_size=8, dtype="bfloat16")
    a, b = f32.layer(3), bf16.layer(3)
    assert b.dtype == np.float32 and np.abs(a - b).max() <= 2 ** -7 * np.abs(a).max()
