"""The aishell1 TFDS builder: build, data-source round trip, checks, interrupted builds."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tests.data_fixtures import cfg, prepared_dataset, synthetic_corpus  # noqa: F401

from w2v_jax.data import aishell, labels as L, tfds_aishell1
from w2v_jax.data.errors import DataError


def test_build_summary(prepared_dataset):
    _, summary = prepared_dataset
    assert dict(summary.kept) == {"train": 8, "dev": 8, "test": 8}
    assert sum(summary.skipped.values()) == 0


def test_data_source_round_trip(prepared_dataset, synthetic_corpus, cfg):
    data_dir, _ = prepared_dataset
    source = tfds.data_source("aishell1", split="dev", data_dir=data_dir, download=False)
    assert len(source) == 8
    data = tfds_aishell1.open_prepared(data_dir, "dev", cfg)
    corpus = aishell.Corpus(synthetic_corpus)
    expected = {u.utt_id: aishell.load_example(corpus, u, cfg) for u in corpus.utterances("dev")}
    # Records are in generation order, so the saved lengths index them.
    assert [source[i]["id"].decode() for i in range(8)] == sorted(expected)
    for i in range(len(data)):
        record = data.source[i]
        want = expected[record["id"].decode()]
        assert len(record["audio"]) == data.lengths[i] == len(want["audio"])
        assert len(record["segments"]["frame"]) == data.num_segments[i]
        np.testing.assert_array_equal(record["audio"], want["audio"])
        assert record["audio"].dtype == np.int16
        for task in L.TASKS:
            np.testing.assert_array_equal(record["frames"][task], want["frames"][task])
            np.testing.assert_array_equal(record["segments"][task], want["segments"][task])
        np.testing.assert_array_equal(record["segments"]["frame"], want["segments"]["frame"])
        assert record["sex"].decode() == want["sex"] and record["speaker"].decode() == want["speaker"]
    assert data.metadata["inventories"] == L.inventories()
    assert data.metadata["frame_geometry"]["frame_stride"] == cfg.frame_stride == 320
    assert data.metadata["frame_geometry"]["receptive_field"] == 400


def test_inventory_or_geometry_mismatch_is_an_error(prepared_dataset, tmp_path, cfg):
    data_dir, _ = prepared_dataset
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    with pytest.raises(DataError, match="frame geometry"):
        tfds_aishell1.open_prepared(os.fspath(copy), "dev", cfg.replace(conv_stride=(5, 2, 2, 2, 2, 2, 1)))
    meta_path = copy / "aishell1" / "1.0.0" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["inventories"]["final"] = meta["inventories"]["final"][::-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="final inventory"):
        tfds_aishell1.open_prepared(os.fspath(copy), "dev", cfg)


def test_interrupted_build_does_not_load(tmp_path, synthetic_corpus, cfg):
    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, corpus)
    # train is written first; a bad wav in test stops the strict build midway.
    bad = corpus / aishell.WAV_DIR / "test" / "S0004" / "SYN000S0004W0002.wav"
    bad.write_bytes(b"broken")
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="SYN000S0004W0002.wav"):
        tfds_aishell1.prepare(os.fspath(corpus), os.fspath(data_dir), cfg=cfg, strict=True)
    assert not (data_dir / "aishell1" / "1.0.0").exists()
    with pytest.raises(DataError, match="no complete aishell1 dataset"):
        tfds_aishell1.open_prepared(os.fspath(data_dir), "train", cfg)
    with pytest.raises(Exception):
        tfds.data_source("aishell1", split="train", data_dir=os.fspath(data_dir), download=False)


@pytest.mark.slow
def test_prepare_data_cli_reports_skips(tmp_path, synthetic_corpus):
    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, corpus)
    os.remove(corpus / "alignments" / "S0001" / "SYN000S0001W0003.TextGrid")
    result = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", f"--corpus_dir={corpus}",
         f"--data_dir={tmp_path / 'data'}"], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kept: dev 7, test 8, train 8" in result.stdout
    assert "skipped: 1" in result.stdout and "no alignment: 1" in result.stdout
    strict = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", f"--corpus_dir={corpus}",
         f"--data_dir={tmp_path / 'strict'}", "--strict"], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)
    assert strict.returncode != 0 and "SYN000S0001W0003" in strict.stderr
