"""Whole runs through `python -m launch.train`: exact resume after SIGKILL, SIGTERM, two processes,
export from a workdir whose init checkpoint is gone.

Each run is a subprocess with one CPU device (two for the two-process run) sharing
a persistent compilation cache, so only the first run compiles.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (fixture)

TOTAL, FREEZE = 10, 6
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache")
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**base, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _command(corpus, workdir, *extra):
    return [sys.executable, "-m", "launch.train",
            f"--config={os.path.join(REPO, 'configs', 'synthetic_tiny.py')}:tone",
            f"--workdir={workdir}", f"--config.data.dir={corpus}",
            "--config.data.batch_size=4", "--config.data.eval_batch_size=4",
            "--config.data.num_buckets=1", f"--config.total_steps={TOTAL}",
            f"--config.freeze_steps={FREEZE}", "--config.freeze_feature_encoder=True",
            "--config.log_every=1", "--config.eval_every=2", "--config.checkpoint_every=2",
            "--config.max_eval_batches=1", "--config.model.hidden_dropout=0.1",
            "--config.model.layerdrop=0.2", "--config.model.mask_time_prob=0.1", *extra]


def _run(corpus, workdir, env, *extra, cwd=None):
    result = subprocess.run(_command(corpus, workdir, *extra), env=env, capture_output=True,
                            text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(workdir) -> dict[int, float]:
    """The train loss of every step; a step logged twice (replayed after a restart) keeps the last."""
    losses = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "train/loss" in record:
                losses[record["step"]] = record["train/loss"]
    return losses


def _checkpoint_steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


@pytest.fixture(scope="module")
def reference(synthetic_corpus, env, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("reference")
    _run(synthetic_corpus, workdir, env)
    return workdir, _losses(workdir)


def _start_and_wait(corpus, workdir, env, ready):
    process = subprocess.Popen(_command(corpus, workdir), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not ready() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    return process


def test_sigkill_then_resume_is_bitwise_exact(synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    ref_dir, ref_losses = reference
    assert sorted(ref_losses) == list(range(1, TOTAL + 1))
    workdir = tmp_path / "run"
    process = _start_and_wait(synthetic_corpus, workdir, env, lambda: _checkpoint_steps(workdir))
    process.kill()
    process.communicate()
    resumed_from = max(_checkpoint_steps(workdir))
    assert resumed_from < TOTAL
    _run(synthetic_corpus, workdir, env)
    assert _losses(workdir) == ref_losses  # every step, bitwise (JSON floats round-trip exactly)
    assert _checkpoint_steps(workdir)[-1] == TOTAL
    assert os.path.isdir(workdir / "backbone")


def test_sigterm_saves_and_exits_cleanly(synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    workdir = tmp_path / "run"
    process = _start_and_wait(synthetic_corpus, workdir, env,
                              lambda: len(_losses(workdir)) >= 3 if (workdir / "metrics.jsonl").exists() else False)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    stopped = max(_losses(workdir))
    assert f"stopped at step {stopped}: preempted" in stdout
    assert stopped < TOTAL and stopped in _checkpoint_steps(workdir)
    assert not (workdir / "backbone").exists()  # unfinished runs are not exported


def test_two_processes_train_and_checkpoint_together(synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    _, ref_losses = reference
    workdir = tmp_path / "run"
    port = portpicker.pick_unused_port()
    processes = [subprocess.Popen(
        _command(synthetic_corpus, workdir, f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert _checkpoint_steps(workdir)[-1] == TOTAL
    losses = _losses(workdir)  # written by process 0 only: one line per step
    assert sorted(losses) == list(range(1, TOTAL + 1))
    # The same global batches as the one-process reference, split over two processes.
    np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                               [ref_losses[s] for s in sorted(ref_losses)], rtol=2e-4)


def test_a_run_resumes_and_exports_after_its_init_checkpoint_is_gone(
        synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    """The workdir keeps the backbone's architecture and absolute paths: resuming and exporting
    read neither config.init nor the working directory that named it (relatively)."""
    from flax import nnx
    from w2v_jax import checkpoint
    from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model

    env = {**env, "PYTHONPATH": REPO}  # the runs start outside the repository
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    checkpoint.save_model(Wav2Vec2Model(Wav2Vec2Config.preset("tiny"), rngs=nnx.Rngs(0)),
                          str(start / "init"))
    workdir = tmp_path / "run"
    _run(synthetic_corpus, workdir, env, "--config.init=model:init", cwd=start)
    shutil.rmtree(start / "init")
    _run(synthetic_corpus, workdir, env, "--config.init=model:init", cwd=start)  # resumes: done
    out = tmp_path / "exported"
    result = subprocess.run([sys.executable, "-m", "launch.train", f"--workdir={workdir}",
                             f"--export_backbone={out}"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint.load_config(str(out)) == checkpoint.load_config(str(workdir / "backbone"))
