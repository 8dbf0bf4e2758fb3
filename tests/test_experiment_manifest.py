"""The experiment's manifest: a stage is done only when recorded, and only under the same inputs."""

import json
import os

import pytest

from w2v_jax.experiment.manifest import MANIFEST_FILE, Manifest
from w2v_jax.models import ConfigError


def test_a_stage_is_done_only_once_recorded(tmp_path):
    os.makedirs(tmp_path / "train" / "tone")  # a directory left by a crash is not a finished stage
    manifest = Manifest(str(tmp_path))
    assert not manifest.done("train/tone", {"train": "abc"})
    manifest.record("train/tone", {"train": "abc"}, run_dir="x")
    again = Manifest(str(tmp_path))  # read back from disk, as a resumed experiment does
    assert again.done("train/tone", {"train": "abc"})
    assert again.outputs("train/tone") == {"run_dir": "x"}
    saved = json.load(open(tmp_path / MANIFEST_FILE))
    assert set(saved["stages"]["train/tone"]) == {"produced_by", "outputs", "finished"}


def test_a_stage_of_other_inputs_is_refused_by_name(tmp_path):
    manifest = Manifest(str(tmp_path))
    manifest.record("extract/tone", {"train": "abc", "split": "test"})
    with pytest.raises(ConfigError, match=r"stage 'extract/tone' was produced with other split"):
        Manifest(str(tmp_path)).done("extract/tone", {"train": "abc", "split": "dev"})
