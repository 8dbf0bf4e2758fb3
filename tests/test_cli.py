"""Each entry point on each user mistake: one line on stderr naming the flag, key or file,
exit status 2, no traceback, nothing left behind (launch/cli.py)."""

import os
import shutil
import subprocess
import sys

import pytest
from ml_collections import config_dict
from tests.data_fixtures import cfg, prepared_dataset, synthetic_corpus  # noqa: F401

from launch import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/synthetic_tiny.py:tone"]


def launch(module: str, *args: str, progress_bars: bool = False) -> str:
    """Run `python -m launch.MODULE ARGS`; assert it was refused as a user error; return the line."""
    env = {**os.environ, "XLA_FLAGS": ""}
    result = subprocess.run([sys.executable, "-m", f"launch.{module}", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    # prepare_data's own per-split progress bars may precede the line
    assert (lines[-1:] if progress_bars else lines) == [lines[-1]], result.stderr
    assert lines[-1].startswith(f"launch.{module}: error: "), lines[-1]
    return lines[-1]


def test_a_missing_directory_is_named_with_its_flag(tmp_path):
    out = tmp_path / "out"
    assert "--hf_dir=/nonexistent: no such directory" in launch(
        "convert", "--hf_dir=/nonexistent", f"--output_dir={out}")
    assert "--hf_dir=/nonexistent: no such directory" in launch(
        "extract", "--hf_dir=/nonexistent", "--corpus_dir=/tmp", f"--out={out}")
    assert "--model=/nonexistent: no such directory" in launch(
        "probe", "--model=/nonexistent", "--corpus_dir=/tmp", f"--workdir={out}")
    assert not out.exists()


@pytest.mark.slow
def test_an_unknown_config_key_names_the_nearest_valid_one(tmp_path):
    line = launch("train", *TINY, f"--workdir={tmp_path / 'w'}", "--config.totl_steps=30")
    assert line.endswith("--config.totl_steps: unknown key 'totl_steps': did you mean 'total_steps'?")
    # the demo's default config is read while its flags are defined, before absl runs
    line = launch("demo", f"--workdir={tmp_path / 'd'}", "--config.trian.total_steps=30")
    assert "did you mean 'train.total_steps'?" in line
    assert not (tmp_path / "w").exists() and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_pretraining_and_corpus_mistakes_are_one_line(tmp_path):
    line = launch("pretrain", "--config=configs/pretrain_small.py", f"--workdir={tmp_path / 'p'}",
                  "--config.totl_steps=30")
    assert line.endswith("did you mean 'total_steps'?")
    line = launch("pretrain", "--config=configs/pretrain_small.py", f"--workdir={tmp_path / 'p'}",
                  f"--config.data.dir={tmp_path / 'no_audio'}")
    assert "no_audio" in line
    assert "at least 6 speakers" in launch("make_corpus", f"--out={tmp_path / 'c'}", "--speakers=4")
    assert not (tmp_path / "p").exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_a_config_files_own_complaint_and_an_unknown_flag(tmp_path):
    assert "configs/paper.py argument 'bogus'" in launch(
        "experiment", "--config=configs/paper.py:bogus", f"--workdir={tmp_path}")
    assert "no such file 'configs/nope.py'" in launch(
        "train", "--config=configs/nope.py:tone", f"--workdir={tmp_path / 'w'}")
    assert "Unknown command line flag 'wrokdir'" in launch("train", *TINY, f"--wrokdir={tmp_path}")


@pytest.mark.parametrize("overrides,expected", [
    (["--config.checkpoint_every=7", "--config.eval_every=5"], "config.checkpoint_every=7: must be a multiple"),
    (["--config.init=hf:/nonexistent"], "config.init='hf:/nonexistent': no such directory"),
])
def test_an_invalid_config_is_refused_before_the_workdir_exists(overrides, expected, tmp_path,
                                                                synthetic_corpus):  # noqa: F811
    workdir = tmp_path / "runs" / "w"
    assert expected in launch("train", *TINY, f"--workdir={workdir}",
                              f"--config.data.dir={synthetic_corpus}", *overrides)
    assert not (tmp_path / "runs").exists()


def test_a_prepared_dataset_given_as_a_corpus_leaves_no_workdir(tmp_path, prepared_dataset):  # noqa: F811
    data_dir, _ = prepared_dataset
    line = launch("train", *TINY, f"--workdir={tmp_path / 'runs' / 'w'}", f"--config.data.dir={data_dir}")
    assert "an AISHELL-1 corpus root" in line
    assert os.listdir(tmp_path) == []  # train made the workdir and checkpoints/ before it failed


def test_a_bad_corpus_file_under_strict(tmp_path, synthetic_corpus):  # noqa: F811
    corpus = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, corpus)
    bad = sorted((corpus / "data_aishell" / "wav" / "train").rglob("*.wav"))[0]
    bad.write_text("not audio")
    line = launch("prepare_data", f"--corpus_dir={corpus}", f"--data_dir={tmp_path / 'data'}", "--strict",
                  progress_bars=True)
    assert f"{bad}: cannot read audio" in line
    assert not (tmp_path / "data").exists()


def test_a_missing_store_and_too_few_speakers(tmp_path):
    assert f"{tmp_path}/nope: no store.json" in launch(
        "analyze", f"--embeddings={tmp_path}/nope", f"--out={tmp_path}/report")
    assert "--speakers=4: 4 is not integer >= 6" in launch(
        "make_synthetic", f"--out={tmp_path}/corpus", "--speakers=4")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_refused_store_is_kept(tmp_path, synthetic_corpus):  # noqa: F811
    out = tmp_path / "emb"
    (out / "notes").mkdir(parents=True)
    line = launch("extract", f"--corpus_dir={synthetic_corpus}", "--init=random", f"--out={out}")
    assert str(out) in line and "store.json" in line
    assert (out / "notes").is_dir()  # it existed before: never removed


@pytest.mark.slow
def test_verbosity_shows_the_traceback(tmp_path):
    args = ["-m", "launch.convert", f"--hf_dir={tmp_path}", f"--output_dir={tmp_path}/o"]
    assert f"{tmp_path}" in launch("convert", *args[2:])  # a directory without a checkpoint
    result = subprocess.run([sys.executable, *args, "--verbosity=1"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" in result.stderr, result.stderr[-3000:]


def test_unknown_key_messages():
    c = config_dict.ConfigDict({"total_steps": 1, "data": {"dir": "", "batch_size": 8}})
    assert cli._unknown_key(c, "data.dir") is None
    assert cli._unknown_key(c, "data.batchsize") == "unknown key 'data.batchsize': did you mean 'data.batch_size'?"
    assert cli._unknown_key(c, "dta.dir") == "unknown key 'dta.dir': did you mean 'data.dir'?"
    assert cli._unknown_key(c, "data.zzz") == "unknown key 'data.zzz'; the keys under 'data' are batch_size, dir"
    assert cli._unknown_key(c, "total_steps.x") == ("unknown key 'total_steps.x': 'total_steps' is a value, "
                                                     "not a group of keys")


def test_a_refused_run_removes_only_directories_without_files(tmp_path):
    made = tmp_path / "a" / "b" / "c"
    assert cli._first_missing(str(made)) == str(tmp_path / "a")
    made.mkdir(parents=True)
    cli._remove_if_no_files(str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    made.mkdir(parents=True)
    (made / "config.json").write_text("{}")
    cli._remove_if_no_files(str(tmp_path / "a"))
    assert (made / "config.json").exists()


def test_library_chatter_is_quiet_and_our_warnings_show(tmp_path, caplog):
    import orbax.checkpoint as ocp
    from absl import logging as absl_logging

    import w2v_jax  # noqa: F401  -- importing the library quiets the others

    with caplog.at_level("INFO"):
        ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(read_only=True)).close()
        absl_logging.warning("ours: %s", "skipped 2 weights")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "read only" in m or "read_only" in m], messages
    assert "ours: skipped 2 weights" in messages
