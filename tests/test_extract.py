"""Extraction: the stored rows are the model's own hidden states at each segment's central frame."""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import portpicker
import pytest
from flax import nnx

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (session fixture)
from tests.tiny_hf import VARIANTS
from w2v_jax import sharding
from w2v_jax.analysis import extract as extract_lib
from w2v_jax.analysis.extract import extract
from w2v_jax.analysis.store import Store
from w2v_jax.data import labels as L
from w2v_jax.data.sources import corpus_split
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATHER_FN = extract_lib._gather_fn  # the real one, for count_forwards to wrap


def tiny(norm: str) -> Wav2Vec2Model:
    """The tiny preset with the CNN norm of either released variant; "layer" is the preset itself,
    the model `launch.extract --init=random --preset=tiny` builds."""
    return Wav2Vec2Model(Wav2Vec2Config.preset("tiny", **VARIANTS[norm]), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def tiny_model():
    return tiny("layer")


@pytest.fixture(scope="module")
def test_split(synthetic_corpus, tiny_model):  # noqa: F811
    return corpus_split(synthetic_corpus, "test", tiny_model.config)


def reference_rows(model, data, num_utterances=3):
    """Utterances alone, unpadded, through the model, at each segment's central frame:
    {(utterance, segment): (hidden states (layers, D), CNN output (C,))}."""
    rows = {}
    for example in list(data.source)[:num_utterances]:
        audio = example["audio"].astype(np.float32) / 32768.0
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)  # the pipeline's normalisation
        out = jax.jit(lambda x: model(x))(audio[None])
        for k, frame in enumerate(example["segments"]["frame"]):
            rows[(str(example["id"]), k)] = (np.stack([h[0, frame] for h in out.hidden_states]),
                                             np.asarray(out.extract_features[0, frame]))
    return rows


def assert_rows_are_the_models(store, model, data):
    """Every segment once; the rows of the first utterances equal the model on each alone."""
    keys = list(zip(store.table["utterance"], store.table["segment"].tolist()))
    assert len(keys) == len(set(keys)) == data.num_segments.sum()
    expected = reference_rows(model, data)
    layers, cnn = store.layers(), store.layer("cnn")
    checked = [i for i, key in enumerate(keys) if key in expected]
    assert len(checked) == len(expected) > 10
    for i in checked:
        hidden, features = expected[keys[i]]
        # Batched with padding vs alone: the same function, so float32 rounding only.
        np.testing.assert_allclose(layers[:, i], hidden, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(cnn[i], features, atol=2e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_store_rows_equal_the_models_hidden_states(tmp_path, norm, test_split):
    model = tiny(norm)
    store = extract(model, test_split, str(tmp_path / "store"), batch_size=8, mesh=sharding.make_mesh())
    assert store.num_layers == model.config.num_hidden_layers + 1
    assert store.layer("cnn").shape == (len(store), model.config.conv_dim[-1])
    assert_rows_are_the_models(store, model, test_split)
    # Labels travel with the rows: a final's tone, every row's sex.
    finals = store.table["final"] >= 0
    assert finals.any() and (store.table["tone"][finals] >= 0).all()
    assert set(store.table["sex_label"]) <= set(L.SEXES)
    np.testing.assert_allclose(store.table["time"], (320 * store.table["frame"] + 200) / 16000, atol=1e-4)


def mirrored_largest_weight(model: Wav2Vec2Model) -> Wav2Vec2Model:
    """A copy whose largest weight w is replaced by -w reversed: every per-tensor norm or
    sum of squares is unchanged, the model is not."""
    other = nnx.clone(model)
    params = nnx.to_flat_state(nnx.state(other, nnx.Param))
    _, largest = max(params, key=lambda item: item[1].get_value().size)
    weight = largest.get_value()
    largest.set_value(-weight.reshape(-1)[::-1].reshape(weight.shape))
    nnx.update(other, nnx.from_flat_state(params))
    return other


def test_rerun_reuses_a_complete_store_and_refuses_another_model(tmp_path, tiny_model, test_split):
    out = str(tmp_path / "store")
    extract(tiny_model, test_split, out, batch_size=8)
    mtime = os.path.getmtime(os.path.join(out, "store.json"))
    extract(tiny_model, test_split, out, batch_size=4)  # same model, split and dtype: nothing to do
    assert os.path.getmtime(os.path.join(out, "store.json")) == mtime
    with pytest.raises(FileExistsError, match="another model"):
        extract(mirrored_largest_weight(tiny_model), test_split, out, batch_size=8)
    with pytest.raises(FileExistsError, match="another dtype"):
        extract(tiny_model, test_split, out, batch_size=8, dtype="bfloat16")


class Interrupted(BaseException):
    """Stands in for Ctrl-C or a kill: no `except Exception` catches it, and unlike a real
    KeyboardInterrupt one that escapes fails its test instead of stopping pytest."""


def count_forwards(monkeypatch, stop_after=None) -> types.SimpleNamespace:
    """Wraps extraction's jitted forward: `.batches` of the returned object counts the batches
    it ran; the call after `stop_after` of them raises Interrupted."""
    forwards = types.SimpleNamespace(batches=0)

    def gather_fn(*key):
        gather = GATHER_FN(*key)

        def counted(*args):
            if forwards.batches == stop_after:
                raise Interrupted
            forwards.batches += 1
            return gather(*args)
        return counted

    monkeypatch.setattr(extract_lib, "_gather_fn", gather_fn)
    return forwards


def saved_batches(out) -> int:
    with open(os.path.join(out + ".partial", "part-000", extract_lib.PROGRESS_FILE)) as f:
        return json.load(f)["batches"]


@pytest.mark.slow
def test_interrupted_extraction_resumes_without_recomputing_saved_batches(
        tmp_path, tiny_model, test_split, monkeypatch):
    one_device = sharding.make_mesh(devices=jax.devices()[:1])
    run = lambda out: extract(tiny_model, test_split, out, batch_size=4, checkpoint_every=1,
                              mesh=one_device)
    forwards = count_forwards(monkeypatch)
    whole = run(str(tmp_path / "whole"))
    total = forwards.batches
    assert total >= 2

    out = str(tmp_path / "resumed")
    count_forwards(monkeypatch, stop_after=1)  # dies in the second batch, after the first was saved
    with pytest.raises(Interrupted):
        run(out)
    assert not os.path.exists(out) and saved_batches(out) == 1
    with pytest.raises(FileNotFoundError, match="unfinished"):
        Store(out)
    forwards = count_forwards(monkeypatch)
    resumed = run(out)
    assert forwards.batches == total - 1  # the saved batch was not run again
    np.testing.assert_array_equal(resumed.layers(), whole.layers())
    np.testing.assert_array_equal(resumed.layer("cnn"), whole.layer("cnn"))
    np.testing.assert_array_equal(resumed.table["utterance"], whole.table["utterance"])


def test_unfinished_extraction_refuses_another_plan_of_batches(tmp_path, tiny_model, test_split,
                                                                monkeypatch):
    out = str(tmp_path / "store")
    one_device = sharding.make_mesh(devices=jax.devices()[:1])
    count_forwards(monkeypatch, stop_after=0)  # interrupted before any batch was saved
    with pytest.raises(Interrupted):
        extract(tiny_model, test_split, out, batch_size=4, mesh=one_device)
    # Its rows would follow the batches of batch size 4: another size must not resume them.
    with pytest.raises(FileExistsError, match="batch size 4, not 1 of 2"):
        extract(tiny_model, test_split, out, batch_size=2, mesh=one_device)


@pytest.mark.slow
def test_extract_cli_joins_a_two_process_run(synthetic_corpus, tiny_model, test_split, tmp_path):  # noqa: F811
    out = str(tmp_path / "store")
    port = portpicker.pick_unused_port()
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},  # one CPU device each
           "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "launch.extract", f"--corpus_dir={synthetic_corpus}", "--split=test",
         "--init=random", "--preset=tiny", "--batch_size=4", f"--out={out}",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()  # only one still running: e.g. waiting for a partner that died
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    store = Store(out)
    assert store.info["processes"] == 2 and len(store.parts) == 2  # one share per process
    layers = tiny_model.config.num_hidden_layers + 1
    assert f"{out}: {len(store)} segments x {layers} layers (float32), 2 process(es)" in outputs[0][0]
    assert_rows_are_the_models(store, tiny_model, test_split)
    # The same model and split in one process: the two-process store is reused as it is.
    mtime = os.path.getmtime(os.path.join(out, "store.json"))
    assert len(extract(tiny_model, test_split, out)) == len(store)
    assert os.path.getmtime(os.path.join(out, "store.json")) == mtime


def test_bfloat16_store(tmp_path, tiny_model, test_split):
    f32 = extract(tiny_model, test_split, str(tmp_path / "f32"), batch_size=8)
    bf16 = extract(tiny_model, test_split, str(tmp_path / "bf16"), batch_size=8, dtype="bfloat16")
    a, b = f32.layer(3), bf16.layer(3)
    assert b.dtype == np.float32 and np.abs(a - b).max() <= 2 ** -7 * np.abs(a).max()
