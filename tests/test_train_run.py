"""Whole runs through `python -m launch.train`: exact resume after SIGKILL and from a phase-2
checkpoint, SIGTERM, two processes (one killed, both resumed, backbone exported), export from a
workdir whose init checkpoint is gone.

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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # whole runs in subprocesses
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


def _records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _losses(workdir) -> dict[int, float]:
    """The train loss of every step, each logged once (a resume drops what it replays)."""
    steps = [r["step"] for r in _records(workdir) if "train/loss" in r]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(steps)}"
    return {r["step"]: r["train/loss"] for r in _records(workdir) if "train/loss" in r}


def _checkpoint_steps(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


KEEP = 2  # the reference keeps its latest 2 checkpoints and the best (unfingerprinted: same losses)


@pytest.fixture(scope="module")
def reference(synthetic_corpus, env, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("reference")
    _run(synthetic_corpus, workdir, env, f"--config.keep_checkpoints={KEEP}")
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


def test_two_processes_survive_a_death_resume_and_export(synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    """Process 1 is killed mid-run: process 0 exits at once (status 1, one line, no core dump).
    Both rerun: they resume, log each step once, match the one-process losses and write
    backbone/, which a one-device process loads."""
    _, ref_losses = reference
    workdir = tmp_path / "run"

    def start():
        port = portpicker.pick_unused_port()
        return [subprocess.Popen(
            _command(synthetic_corpus, workdir, f"--coordinator_address=127.0.0.1:{port}",
                     "--num_processes=2", f"--process_id={i}"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]

    first = start()
    deadline = time.time() + 240
    while (first[0].poll() is None and time.time() < deadline
           and not ((workdir / "metrics.jsonl").exists() and len(_losses(workdir)) >= 3)):
        time.sleep(0.01)
    first[1].kill()
    killed = time.time()
    _, stderr = first[0].communicate(timeout=60)
    assert time.time() - killed < 20  # not the minute of jax.distributed.shutdown
    assert first[0].returncode == 1, stderr[-3000:]
    assert "process 0 of 2:" in stderr.strip().splitlines()[-1]
    first[1].communicate()

    processes = start()
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert _checkpoint_steps(workdir)[-1] == TOTAL
    losses = _losses(workdir)  # written by process 0 only: one line per step
    assert sorted(losses) == list(range(1, TOTAL + 1))
    # The same global batches as the one-process reference, split over two processes.
    np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                               [ref_losses[s] for s in sorted(ref_losses)], rtol=2e-4)
    loaded = subprocess.run(  # env: one CPU device
        [sys.executable, "-c", "import sys, jax; from w2v_jax import checkpoint; "
         "m = checkpoint.load_model(sys.argv[1]); "
         "print(jax.device_count(), m.config.num_hidden_layers)", str(workdir / "backbone")],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    from w2v_jax.models import Wav2Vec2Config
    assert loaded.stdout.split() == ["1", str(Wav2Vec2Config.preset("tiny").num_hidden_layers)]


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


def test_resume_from_a_phase2_checkpoint_is_bitwise_exact(synthetic_corpus, env, reference, tmp_path):  # noqa: F811
    """The reference stopped after its phase-2 checkpoint at TOTAL - 2 (its later checkpoint,
    export and metrics removed from a copy) resumes with the backbone's Adam state: the same
    losses, dev confusion and exported backbone as the uninterrupted run, bitwise."""
    from w2v_jax import checkpoint

    ref_dir, ref_losses = reference
    resume_from = TOTAL - 2
    assert FREEZE < resume_from
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    for step in _checkpoint_steps(workdir):
        if step > resume_from:
            shutil.rmtree(workdir / "checkpoints" / str(step))
    shutil.rmtree(workdir / "backbone")
    os.remove(workdir / "metrics.jsonl")
    assert max(_checkpoint_steps(workdir)) == resume_from
    with open(workdir / "checkpoints" / str(resume_from) / "meta" / "metadata") as f:
        assert json.load(f)["phase"] == 1  # saved in phase 2 (heads and backbone)
    kept_before = _checkpoint_steps(workdir)
    _run(synthetic_corpus, workdir, env, f"--config.keep_checkpoints={KEEP}")
    assert _losses(workdir) == {s: ref_losses[s] for s in range(resume_from + 1, TOTAL + 1)}
    # The resumed process keeps the best checkpoint an earlier process saved.
    assert _checkpoint_steps(workdir) == _checkpoint_steps(ref_dir) == sorted({*kept_before, TOTAL})

    def final(d):  # the iterator position, dev confusion and exported backbone after TOTAL
        with open(d / "checkpoints" / str(TOTAL) / "data" / "metadata") as f:
            position = json.load(f)
        dev = [r["dev/tone/confusion"] for r in _records(d)
               if r["step"] == TOTAL and "dev/tone/confusion" in r]
        backbone = checkpoint.load_model(str(d / "backbone"))
        return position, dev, {k: np.asarray(v) for k, v in _flat_params(backbone)}

    (position, dev, params), (ref_position, ref_dev, ref_params) = final(workdir), final(ref_dir)
    assert position == ref_position  # the data iterator continued where it stood
    assert dev and dev == ref_dev
    assert params.keys() == ref_params.keys()
    for key, value in ref_params.items():
        np.testing.assert_array_equal(params[key], value, err_msg=key)


def _flat_params(model):
    from flax import nnx
    return [("/".join(map(str, path)), var.get_value())
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))]
