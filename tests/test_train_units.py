"""Losses, metrics, schedule, Adam(W) updates and config checks against hand-worked references
(no compiling of models)."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import configs.aishell_large
from w2v_jax.data.labels import task_weights
from tests.data_fixtures import cfg  # noqa: F401  (fixture)
from w2v_jax import sharding
from w2v_jax.models import ConfigError, Wav2Vec2Config
from w2v_jax.train import FineTuning, build, check_config, default_config, fingerprint, tri_stage_schedule
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import Checkpoints
from w2v_jax.train.config import best_metric_choices, resolve_config
from w2v_jax.train.heads import confusion_matrix, masked_cross_entropy, multitask_loss
from w2v_jax.train.metrics import summarize_confusion

pytestmark = pytest.mark.timeout(120)
LOGITS = np.array([[[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [1.0, 1.0, 1.0]]], np.float32)
LABELS = np.array([[0, 2, -1, 1]], np.int32)  # frame 2 is ignored


def numpy_cross_entropy(logits, labels):
    rows = [(l, y) for l, y in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)) if y >= 0]
    return np.mean([np.log(np.exp(l).sum()) - l[y] for l, y in rows])


def test_masked_cross_entropy_skips_the_ignore_label():
    loss, count = masked_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))
    assert int(count) == 3
    np.testing.assert_allclose(float(loss), numpy_cross_entropy(LOGITS, LABELS), rtol=1e-6)


def test_multitask_loss_is_the_weighted_sum():
    other = np.array([[1, -1, 0, 0]], np.int32)
    total, metrics = multitask_loss({"tone": jnp.asarray(LOGITS), "sex": jnp.asarray(LOGITS[..., :2])},
                                    {"tone": jnp.asarray(LABELS), "sex": jnp.asarray(other)},
                                    {"tone": 1.0, "sex": 0.5})
    expected = numpy_cross_entropy(LOGITS, LABELS) + 0.5 * numpy_cross_entropy(LOGITS[..., :2], other)
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    # tone predictions: 0, 2, (ignored), 0 -> 2 of 3 right
    np.testing.assert_allclose(float(metrics["tone/accuracy"]), 2 / 3, rtol=1e-6)


def test_confusion_matrix_and_per_class_accuracy():
    confusion = np.asarray(confusion_matrix(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    expected = np.zeros((3, 3), int)
    expected[0, 0] = expected[2, 2] = expected[1, 0] = 1  # (true, predicted); the ignored frame absent
    np.testing.assert_array_equal(confusion, expected)
    summary = summarize_confusion(np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]]))
    assert summary["accuracy"] == pytest.approx(5 / 8)
    assert summary["class_accuracy"] == [0.75, 0.5, None]
    assert summary["frames"] == 8


def test_tri_stage_schedule_by_hand():
    # peak 1e-3, 100 steps: warmup 10 from 1e-5, hold 40, decay 50 to 5e-5, then 5e-5.
    lr = tri_stage_schedule(1e-3, 100)
    for step, expected in [(0, 1e-5), (5, 1e-5 + 5 * (1e-3 - 1e-5) / 10), (10, 1e-3), (49, 1e-3),
                           (75, 1e-3 * math.sqrt(0.05)), (100, 5e-5), (500, 5e-5)]:
        assert float(lr(step)) == pytest.approx(expected, rel=1e-5), step


def _config(**changes):
    c = default_config()
    c.data.dir = "corpus"
    c.update_from_flattened_dict(changes)
    return c


@pytest.mark.parametrize("key, value, named", [
    ("optimizer.learning_rate", -1.0, "optimizer.learning_rate"),
    ("optimizer.warmup_ratio", 0.5, "optimizer.warmup_ratio"),
    ("freeze_steps", 200_000, "freeze_steps"),
    ("data.source", "tfrecord", "data.source"),
    ("data.processes", -1, "config.data.processes=-1"),
    ("checkpoint_every", 1500, "checkpoint_every"),
    ("init", "pretrained", "init"),
    ("init", "hf:", "config.init='hf:'"),  # no directory: was a bare FileNotFoundError('')
    ("seed", -1, "config.seed=-1"),  # numpy refuses it, but only once data loading starts
    ("head_dropout", 1.0, "config.head_dropout=1.0"),  # every gradient NaN
    ("head_dropout", -0.1, "config.head_dropout=-0.1"),  # silently rescales
    ("model.attention_dropout", 1.0, "config.model.attention_dropout=1.0"),  # the model allows 1
    # The model's own checks, named by the config key rather than Wav2Vec2Config's field.
    ("model.mask_time_prob", 1.5, "config.model.mask_time_prob=1.5"),
    ("model.dtype", "float8", "config.model.dtype='float8'"),
    ("model.preset", "huge", "config.model.preset='huge'"),
])
def test_invalid_values_are_named(key, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        check_config(_config(**{key: value}))


def test_architecture_keys_are_refused_on_a_checkpoint():
    """init=hf:/model: brings the architecture: a set num_hidden_layers would be ignored silently."""
    with pytest.raises(ConfigError, match=r"config\.model\.num_hidden_layers=2: is architecture"):
        check_config(_config(init="hf:/some/dir", **{"model.num_hidden_layers": 2}))
    check_config(_config(init="hf:/some/dir", **{"model.layerdrop": 0.2}))  # a switch applies
    check_config(_config(**{"model.num_hidden_layers": 2}))  # init=random builds it


@pytest.mark.parametrize("best_metric", ["tone/loss", "tone/frames", "tone/class_accuracy",
                                         "sex/accuracy", "loss"])
def test_best_metric_must_be_a_dev_score_of_the_tasks(best_metric):
    """A train loss, a frame count, a per-class list or another task's score: refused, choices listed."""
    with pytest.raises(ConfigError, match=r"config\.best_metric=.*\['accuracy', 'tone/accuracy'\]"):
        check_config(_config(best_metric=best_metric))
    check_config(_config(best_metric="tone/accuracy"))


def test_every_best_metric_choice_is_a_float_that_evaluation_reports(tmp_path, cfg):  # noqa: F811
    """The choices come from the metrics code, so the loop's dev["dev/" + best_metric] always exists."""
    config = _config(**{"data.dir": str(tmp_path)})
    config.tasks = ml_collections.ConfigDict({"tone": 1.0, "sex": 1.0})
    counts = {"tone": np.array([[3, 1], [0, 2]]), "sex": np.array([[1, 1], [1, 1]])}
    task = FineTuning(config, cfg)
    dev = task.summarize(counts)
    assert task.score(dev) == dev["dev/accuracy"]
    choices = best_metric_choices(config.tasks)
    assert sorted(choices) == ["accuracy", "sex/accuracy", "tone/accuracy"]
    assert all(isinstance(dev["dev/" + choice], float) for choice in choices)
    assert dev["dev/accuracy"] == pytest.approx((5 / 6 + 2 / 4) / 2)


def test_the_latest_checkpoints_and_the_best_are_kept(tmp_path):
    """keep_checkpoints=2 keeps the latest 2 and the best by score, here an older one; a later
    process (export "best", a resume) reads the scores from disk."""
    config = _config(keep_checkpoints=2, async_checkpoints=False)
    scores = {2: 0.1, 4: 0.9, 6: 0.3, 8: 0.2, 10: 0.4}
    checkpoints = Checkpoints(str(tmp_path), config)
    for step, score in scores.items():
        checkpoints.save(step, {"x": np.full(3, step, np.float32)}, {"position": step}, {"phase": 0},
                         score)
    checkpoints.close()
    assert sorted(int(n) for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()) == [4, 8, 10]
    reopened = Checkpoints(str(tmp_path), config, read_only=True)
    assert (reopened.best_step(), reopened.latest_step()) == (4, 10)
    reopened.close()


def test_batch_sizes_must_split_over_the_devices():
    """Checked before anything trains: the eval batch used to fail at the first evaluation."""
    sizes = {"data.batch_size": 4, "data.eval_batch_size": 3}
    with pytest.raises(ConfigError, match=r"config\.data\.eval_batch_size=3: .* on 2 devices"):
        check_config(_config(**sizes), device_count=2, process_count=1)
    with pytest.raises(ConfigError, match=r"config\.data\.batch_size=4: .*data x fsdp = 1 x 8"):
        check_config(_config(**sizes, **{"mesh.fsdp": 8}), device_count=8, process_count=1)
    check_config(_config(**sizes), device_count=1, process_count=1)


def test_a_mesh_that_does_not_fit_the_devices_is_named():
    with pytest.raises(ConfigError, match=r"config\.mesh\.fsdp=3 x config\.mesh\.tensor=1 .* 1 devices"):
        check_config(_config(**{"mesh.fsdp": 3}), device_count=1)
    with pytest.raises(ConfigError, match=r"config\.mesh\.data=3 .* 8 devices"):
        check_config(_config(**{"mesh.data": 3}), device_count=8)


def test_resolved_config_names_directories_absolutely(tmp_path, monkeypatch):
    """A run records absolute paths, so its workdir works from any directory."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("corpus")  # _config's data.dir
    resolved = resolve_config(_config(init="hf:models/large"))
    assert resolved.init == "hf:" + os.path.join(os.getcwd(), "models", "large")
    assert resolved.data.dir == os.path.join(os.getcwd(), "corpus")
    with pytest.raises(ConfigError, match=r"config\.data\.dir='missing': no such directory"):
        resolve_config(_config(**{"data.dir": "missing"}))


def test_aishell_large_trains_a_large_model_from_random_and_takes_the_papers_task_names():
    config = configs.aishell_large.get_config("finals+sex")
    assert dict(config.tasks) == {"final": 1.0, "sex": 1.0}
    assert task_weights("final+sex") == {"final": 1.0, "sex": 1.0}  # configs/paper.py's spelling
    config.init = "random"
    model = build.backbone_config(config)
    assert (model.num_hidden_layers, model.hidden_size) == (24, 1024)


def test_unknown_keys_are_named():
    c = _config()
    with c.unlocked():
        c.optimizer.lrr = 1.0
    with pytest.raises(ConfigError, match=r"optimizer\.lrr"):
        check_config(c)
    c = _config()
    with c.unlocked():
        c.tasks.pitch = 1.0
    with pytest.raises(ConfigError, match=r"tasks\.pitch"):
        check_config(c)
    c = _config()
    with c.unlocked():
        c.model.hidden_dim = 8
    with pytest.raises(ConfigError, match=r"model\.hidden_dim"):
        check_config(c)


def test_fingerprint_ignores_cadence_not_substance():
    base = fingerprint(_config())
    assert fingerprint(_config(log_every=7, eval_every=10, checkpoint_every=20)) == base
    assert fingerprint(_config(**{"data.processes": 2})) == base  # who reads, not what is read
    assert fingerprint(_config(**{"optimizer.learning_rate": 1e-4})) != base
    assert fingerprint(_config(**{"tasks.tone": 2.0})) != base


@pytest.mark.slow  # a launcher subprocess each
@pytest.mark.parametrize("overrides, devices, named", [
    (["--config.optimizer.lrr=1"], 1, "lrr"),
    (["--config.optimizer.b2=1.5"], 1, "config.optimizer.b2"),
    # The audit's repro: it trained eval_every steps, then failed without a checkpoint.
    (["--config.data.batch_size=4", "--config.data.eval_batch_size=3", "--config.eval_every=2",
      "--config.checkpoint_every=2"], 2, "config.data.eval_batch_size=3"),
    (["--config.data.dir=missing"], 1, "config.data.dir='missing'"),
    (["--config.init=hf:typo"], 1, "typo': no such directory"),  # recorded absolute
])
def test_command_line_mistakes_fail_before_the_workdir_is_written(tmp_path, overrides, devices, named):
    """The launcher stops naming the key, before it creates the workdir or compiles anything."""
    result = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config=configs/synthetic_tiny.py:tone",
         f"--workdir={tmp_path / 'run'}", f"--config.data.dir={tmp_path}", *overrides],
        capture_output=True, text=True, timeout=120,
        env={**_env(), "JAX_PLATFORMS": "cpu",
             "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
    assert result.returncode != 0
    assert named in result.stderr
    assert not (tmp_path / "run").exists()


def _env():
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}



class _LinearHead(nnx.Module):
    """A FrameClassifier stand-in: one linear "tone" head on given frame features, so that
    the train step's gradient is a hand computation."""

    def __init__(self, dim: int):
        self.heads = nnx.Dict({"tone": nnx.Linear(dim, 5, rngs=nnx.Rngs(0))})

    def __call__(self, input_values, attention_mask=None, *, deterministic=True):
        return {"tone": self.heads["tone"](input_values)}


def _head_gradient(kernel, bias, features, labels):
    """(d/d kernel, d/d bias, value) of the mean cross-entropy over labelled frames, by hand."""
    x, y = features.reshape(-1, features.shape[-1]), labels.reshape(-1)
    x, y = x[y >= 0], y[y >= 0]
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    d = (p - np.eye(kernel.shape[1])[y]) / len(y)
    return x.T @ d, d.sum(0), np.mean(-np.log(p[np.arange(len(y)), y]))


def _two_steps_against_torch(name):
    """Two real train steps (make_train_step) on a linear head, and torch's optimizer of the
    same name given the hand-computed gradient and the hand-computed learning rate of each
    step: warmup over 2 steps from init_scale * peak, so lr(0) = 0.01 and lr(1) = 0.055."""
    import torch

    config = _config(total_steps=20, freeze_steps=20,  # phase 1 (heads) throughout
                     **{"data.dir": os.path.dirname(__file__)})
    config.tasks = ml_collections.ConfigDict({"tone": 1.0})
    o = config.optimizer
    o.name, o.weight_decay, o.learning_rate, o.init_scale, o.clip_norm = name, 0.5, 0.1, 0.1, 0.0
    hand_lr = [0.1 * 0.1, 0.1 * 0.1 + (0.1 - 0.1 * 0.1) / 2]

    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 3, 7, 4)).astype(np.float32)  # (accum, batch, frames, dim)
    labels = rng.integers(-1, 5, (1, 3, 7)).astype(np.int32)  # -1: ignored frames
    batch = {"input_values": features, "attention_mask": np.ones((1, 3, 7), np.int32),
             "labels/tone": labels}
    graphdef, params, rng_state = S.split_model(_LinearHead(4))
    head = lambda p: tuple(np.asarray(p["heads"]["tone"][k][...], np.float64) for k in ("kernel", "bias"))
    kernel, bias = (torch.tensor(v, requires_grad=True) for v in head(params))
    task = FineTuning(config, Wav2Vec2Config())  # the model is given: its config is not used
    phases = S.Phases(task)
    state = phases.initial_state(params, rng_state, 0)
    step = jax.jit(S.make_train_step(graphdef, task, 0, phases.optimizers[0]))
    reference = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](
        [kernel, bias], lr=hand_lr[0], betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay)
    for lr in hand_lr:
        g_kernel, g_bias, loss = _head_gradient(kernel.detach().numpy(), bias.detach().numpy(),
                                                features.astype(np.float64), labels)
        state, metrics = step(state, batch)
        assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-5)
        assert float(metrics["learning_rate"]) == pytest.approx(lr, rel=1e-6)
        reference.param_groups[0]["lr"] = lr
        kernel.grad, bias.grad = torch.from_numpy(g_kernel), torch.from_numpy(g_bias)
        reference.step()
    return head(jax.device_get(state["params"])), (kernel.detach().numpy(), bias.detach().numpy())


def test_adam_adds_l2_to_the_gradient_and_adamw_decays_decoupled():
    """optimizer.name "adam" updates like torch.optim.Adam(weight_decay) and "adamw" like
    torch.optim.AdamW, with the tri-stage learning rate of each step (not of the next)."""
    results = {}
    for name in ("adam", "adamw"):
        ours, torchs = _two_steps_against_torch(name)
        for a, b, what in zip(ours, torchs, ("kernel", "bias")):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name} {what}")
        results[name] = ours
    # The decay's placement matters here by far more than the tolerance.
    assert np.abs(results["adam"][0] - results["adamw"][0]).max() > 1e-3


def test_shardings_follow_the_logical_axes_and_never_replicate_silently():
    """LOGICAL_RULES maps names to mesh axes; a stacked parameter's extra leading axis is the
    layers'; a dimension its mesh axis does not divide is an error naming parameter and mesh."""
    P = jax.sharding.PartitionSpec
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    spec = lambda names, shape: sharding.partition_spec("a/q_proj/kernel", names, shape, mesh)
    assert spec(("embed", "heads"), (64, 64)) == P("fsdp", "tensor")
    assert spec(("embed", "heads"), (4, 64, 64)) == P(None, "fsdp", "tensor")
    assert spec(("embed", "classes"), (64, 5)) == P("fsdp", None)  # the rule replicates classes
    with pytest.raises(sharding.ShardingError,
                       match=r"a/q_proj/kernel \(64, 63\): dimension 1 \(heads=63\) .*'tensor' of size 2"):
        spec(("embed", "heads"), (64, 63))
    with pytest.raises(sharding.ShardingError, match=r"a/q_proj/kernel \(64,\) declares no logical axes"):
        spec(None, (64,))
    with pytest.raises(sharding.ShardingError, match=r"\['hidden'\] have no rule"):
        sharding.axes("embed", "hidden")


def _tensorboard_scalars(directory) -> list[tuple[int, str]]:
    """(step, tag) of every scalar TensorBoard shows: read from the event files in the order
    written, a SessionLog START at step s hiding the earlier events at steps >= s (its purge)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event, SessionLog

    shown = []
    for name in sorted(os.listdir(directory)):  # tensorboardX names files by creation time
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):  # TFRecord: length, its CRC, payload, the payload's CRC
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            if event.session_log.status == SessionLog.START:
                shown = [(s, t) for s, t in shown if s < event.step]
            shown += [(event.step, v.tag) for v in event.summary.value]
    return shown


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """Steps an interrupted process logged after the restored checkpoint (and a line cut short
    by the kill) are dropped from metrics.jsonl and hidden in TensorBoard."""
    import json
    import time

    from w2v_jax.train.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricWriter

    first = MetricWriter(str(tmp_path), active=True)
    for step in (1, 2, 3, 4):
        first.write(step, {"train/loss": float(step)})
    first.close()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 5, "ti')  # killed mid-line
    time.sleep(1.1)  # a new event file name (tensorboardX uses the time in seconds)
    resumed = MetricWriter(str(tmp_path), active=True, start_step=2)  # the checkpoint at step 2
    for step in (3, 4):
        resumed.write(step, {"train/loss": 10.0 * step})
    resumed.close()
    with open(tmp_path / METRICS_FILE) as f:
        lines = [json.loads(line) for line in f]
    assert [(r["step"], r["train/loss"]) for r in lines] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert _tensorboard_scalars(tmp_path / TENSORBOARD_DIR) == [
        (1, "train/loss"), (2, "train/loss"), (3, "train/loss"), (4, "train/loss")]
    MetricWriter(str(tmp_path), active=False, start_step=0).close()  # other processes: no rewrite
    assert (tmp_path / METRICS_FILE).read_text().count("\n") == 4
