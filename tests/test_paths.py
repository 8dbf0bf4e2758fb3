"""Object-store paths (gs://) through w2v_jax.files, tested on local paths without a network.

`files.is_local` decides whether rename is atomic and memory maps work; forcing it to False
runs the object-store branch (direct writes, completion records written last, whole reads)
on a tmp_path, which is what an object store would see.
"""

import json
import os

import jax
import numpy as np
import pytest
from etils import epath
from flax import nnx

from tests.data_fixtures import cfg, synthetic_corpus  # noqa: F401  (session fixtures)
from tests.test_extract import Interrupted, count_forwards, tiny
from w2v_jax import checkpoint, files, sharding
from w2v_jax.analysis import extract as extract_lib
from w2v_jax.analysis.store import Store
from w2v_jax.data.sources import corpus_split
from w2v_jax.errors import UserError
from w2v_jax.experiment.manifest import Manifest
from w2v_jax.train import default_config
from w2v_jax.train.checkpoints import Checkpoints, has_checkpoint
from w2v_jax.train.metrics import METRICS_FILE, MetricWriter


def pretend_object_store(monkeypatch, tmp_path):
    """Every path taken for an object-store URL from now on; local scratch space under tmp_path."""
    monkeypatch.setattr(files, "is_local", lambda p: False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    return scratch


@pytest.fixture
def object_store(monkeypatch, tmp_path):
    return pretend_object_store(monkeypatch, tmp_path)


@pytest.fixture(params=["local", "object store"])
def branch(request, monkeypatch):
    if request.param == "object store":
        monkeypatch.setattr(files, "is_local", lambda p: False)
    return request.param


def test_which_paths_are_local():
    assert files.is_local("/tmp/x") and files.is_local("runs/a") and files.is_local(epath.Path("/x"))
    assert not files.is_local("gs://bucket/run") and not files.is_local(epath.Path("s3://b/k"))
    assert str(files.absolute("gs://bucket/run")) == "gs://bucket/run"
    assert str(files.absolute("runs/a")) == os.path.abspath("runs/a")


def test_writes_are_whole_on_both_branches(tmp_path, branch, monkeypatch):
    renames, path_type = [], type(files.path(tmp_path))
    real_replace = path_type.replace
    monkeypatch.setattr(path_type, "replace", lambda self, t: renames.append(t) or real_replace(self, t))
    files.write_json(tmp_path / "a.json", {"tone": [1, 2], "名": "ü"})
    files.write_text(str(tmp_path / "b.txt"), "line\n" * 1000)
    files.write_bytes(tmp_path / "c.bin", bytes(range(256)) * 100)
    assert files.read_json(tmp_path / "a.json") == {"tone": [1, 2], "名": "ü"}
    assert (tmp_path / "b.txt").read_text() == "line\n" * 1000
    assert (tmp_path / "c.bin").read_bytes() == bytes(range(256)) * 100
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.txt", "c.bin"]  # no temporary left
    # Locally each file is renamed into place; on an object store it is one upload, no rename.
    assert len(renames) == (3 if branch == "local" else 0)


def test_a_local_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    files.write_json(tmp_path / "run.json", {"step": 1})
    def fail(self, target):
        raise OSError("disk full")
    monkeypatch.setattr(type(files.path(tmp_path)), "replace", fail)
    with pytest.raises(OSError):
        files.write_json(tmp_path / "run.json", {"step": 2})
    assert files.read_json(tmp_path / "run.json") == {"step": 1}


def test_npy_is_memory_mapped_only_locally(tmp_path, branch):
    expected = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", expected)
    loaded = files.load_npy(tmp_path / "a.npy")
    assert isinstance(loaded, np.memmap) == (branch == "local")
    np.testing.assert_array_equal(loaded, expected)


def test_model_directory_on_an_object_store_is_whole_only_with_its_config(tmp_path, object_store):
    model = tiny("layer")
    out = tmp_path / "model"
    checkpoint.save_model(model, str(out))
    assert sorted(p for p in os.listdir(tmp_path) if p != "scratch") == ["model"]  # written in place
    same = lambda a, b: jax.tree.map(np.testing.assert_array_equal, nnx.state(a, nnx.Param),
                                     nnx.state(b, nnx.Param))
    same(checkpoint.load_model(out), model)

    # A kill before the last write leaves the parameters without config.json.
    (out / checkpoint.CONFIG_FILE).unlink()
    assert not checkpoint.is_saved(out)
    with pytest.raises(FileNotFoundError, match=f"{out}.*config.json"):
        checkpoint.load_model(out)
    checkpoint.save_model(model, out)  # the leftover is written again, not refused
    same(checkpoint.load_model(out), model)
    with pytest.raises(FileExistsError, match=str(out)):
        checkpoint.save_model(model, out)


def test_a_model_directorys_extras_come_before_its_completion_record(tmp_path, branch):
    """A training record belongs to the model directory: written before config.json, so an
    export killed while writing it leaves nothing taken for a whole model."""
    model = tiny("layer")
    complete_before = []

    def record(into):
        complete_before.append(checkpoint.is_saved(into))
        files.write_json(into / "training.json", {"step": 7})

    checkpoint.save_model(model, str(tmp_path / "model"), record)
    assert complete_before == [False]
    assert files.read_json(tmp_path / "model" / "training.json") == {"step": 7}

    def killed(into):
        files.write_json(into / "training.json", {"step": 7})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_model(model, str(tmp_path / "killed"), killed)
    assert not checkpoint.is_saved(tmp_path / "killed")


def test_store_on_an_object_store_round_trips_without_memory_maps(tmp_path, synthetic_corpus,  # noqa: F811
                                                                  monkeypatch):
    model = tiny("layer")
    split = corpus_split(synthetic_corpus, "test", model.config)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    forwards = count_forwards(monkeypatch)
    reference = extract_lib.extract(model, split, tmp_path / "local", batch_size=4, mesh=mesh)
    expected_layers, expected_cnn = reference.layers(), reference.layer("cnn")
    total = forwards.batches

    scratch = pretend_object_store(monkeypatch, tmp_path)

    out = tmp_path / "remote"
    count_forwards(monkeypatch, stop_after=1)
    with pytest.raises(Interrupted):  # killed while extracting into the local scratch directory
        extract_lib.extract(model, split, out, batch_size=4, mesh=mesh, checkpoint_every=1)
    assert not out.exists() and not (tmp_path / "remote.partial").exists()
    forwards = count_forwards(monkeypatch)
    store = extract_lib.extract(model, split, str(out), batch_size=4, mesh=mesh, checkpoint_every=1)
    assert forwards.batches == total - 1  # resumed after the saved batch
    assert not list(scratch.rglob("*.npy"))  # the scratch part is removed once uploaded
    np.testing.assert_array_equal(store.layers(), expected_layers)
    np.testing.assert_array_equal(store.layer("cnn"), expected_cnn)
    np.testing.assert_array_equal(store.layer(2, rows=np.array([5, 1])), expected_layers[2][[5, 1]])
    for column, values in reference.table.items():
        np.testing.assert_array_equal(store.table[column], values)

    # An upload cut short before store.json, written last, is no store; a rerun finishes it.
    (out / "store.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"{out}.*unfinished upload"):
        Store(out)
    again = extract_lib.extract(model, split, out, batch_size=4, mesh=mesh)
    np.testing.assert_array_equal(again.layers(), expected_layers)


@pytest.mark.parametrize("as_path", [str, epath.Path])
def test_workdir_as_string_or_path(tmp_path, branch, as_path):
    workdir = as_path(tmp_path / "run")
    files.path(workdir).mkdir()
    writer = MetricWriter(workdir, active=True)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step})
    writer.close()
    resumed = MetricWriter(workdir, active=True, start_step=2)  # step 3 is dropped, then logged anew
    resumed.write(3, {"loss": 0.25})
    resumed.close()
    rows = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 0.5), (3, 0.25)]

    manifest = Manifest(workdir)
    manifest.record("train/tone", {"train": "abc"}, run_dir="x")
    assert Manifest(workdir).done("train/tone", {"train": "abc"})

    config = default_config()
    config.async_checkpoints = False
    checkpoints = Checkpoints(workdir, config)
    state = {"w": np.arange(6, dtype=np.float32)}
    checkpoints.save(4, state, {"epoch": 1}, {"phase": 0}, score=0.5)
    checkpoints.wait()
    assert has_checkpoint(workdir) and checkpoints.best_step() == 4
    restored, data_state = checkpoints.restore(4, {"w": jax.ShapeDtypeStruct((6,), np.float32)})
    checkpoints.close()
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert data_state == {"epoch": 1}


def test_raw_corpora_are_local_only(cfg):  # noqa: F811
    from w2v_jax.data import synthetic
    from w2v_jax.data.unlabelled import audio_files

    with pytest.raises(UserError, match="gs://bucket/corpus: an AISHELL-1-layout corpus .* local disk"):
        corpus_split("gs://bucket/corpus", "test", cfg)
    with pytest.raises(UserError, match="gs://bucket/audio: unlabelled audio"):
        audio_files("gs://bucket/audio", "train")
    with pytest.raises(UserError, match="gs://bucket/new: a generated corpus"):
        synthetic.make_corpus("gs://bucket/new")
    config = default_config()
    config.data.dir = "gs://bucket/corpus"
    from w2v_jax.train.config import resolve_config
    with pytest.raises(UserError, match="gs://bucket/corpus: config.data.dir"):
        resolve_config(config)


def test_dataset_prepared_for_an_object_store_is_uploaded_with_its_info_last(
        tmp_path, monkeypatch, synthetic_corpus, cfg):  # noqa: F811
    from w2v_jax.data import tfds_aishell1

    bucket = os.fspath(tmp_path / "bucket")  # only paths under it count as the object store
    monkeypatch.setattr(files, "is_local", lambda p: not os.fspath(p).startswith(bucket))
    uploaded, copy = [], files.copy_file
    monkeypatch.setattr(files, "copy_file", lambda src, dst: uploaded.append(dst) or copy(src, dst))
    tfds_aishell1.prepare(synthetic_corpus, bucket, cfg=cfg)
    assert uploaded and os.path.basename(uploaded[-1]) == tfds_aishell1.DATASET_INFO
    assert all(os.fspath(p).startswith(bucket) for p in uploaded)
    remote = tfds_aishell1.open_prepared(bucket, "test", cfg)
    local = corpus_split(synthetic_corpus, "test", cfg)
    np.testing.assert_array_equal(remote.lengths, local.lengths)
    np.testing.assert_array_equal(remote.source[0]["audio"], local.source[0]["audio"])
