"""Losses, metrics, schedule and config checks against hand-worked references (no compiling of models)."""

import math
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from w2v_jax.models import ConfigError
from w2v_jax.train import check_config, default_config, fingerprint, tri_stage_schedule
from w2v_jax.train.heads import confusion_matrix, masked_cross_entropy, multitask_loss
from w2v_jax.train.metrics import summarize_confusion
from w2v_jax.train.optim import clip_by_global_norm

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


def test_clipping_by_global_norm():
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(np.asarray(clipped["a"]), [0.6, 0.0], rtol=1e-5)
    unclipped, _ = clip_by_global_norm(grads, 0.0)
    np.testing.assert_array_equal(np.asarray(unclipped["b"]), [[4.0]])


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
    ("checkpoint_every", 1500, "checkpoint_every"),
    ("init", "pretrained", "init"),
])
def test_invalid_values_are_named(key, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        check_config(_config(**{key: value}))


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
    assert fingerprint(_config(**{"optimizer.learning_rate": 1e-4})) != base
    assert fingerprint(_config(**{"tasks.tone": 2.0})) != base


def test_command_line_typo_fails_before_compiling(tmp_path):
    """An unknown --config key and a bad value stop the launcher, naming the key, with no checkpoint written."""
    for override, named in [("--config.optimizer.lrr=1", "lrr"),
                            ("--config.optimizer.b2=1.5", "optimizer.b2")]:
        result = subprocess.run(
            [sys.executable, "-m", "launch.train", "--config=configs/synthetic_tiny.py:tone",
             f"--workdir={tmp_path / 'run'}", f"--config.data.dir={tmp_path}", override],
            capture_output=True, text=True, timeout=120, env={**_env(), "JAX_PLATFORMS": "cpu"})
        assert result.returncode != 0
        assert named in result.stderr
        assert not (tmp_path / "run" / "checkpoints").exists() or not any(
            (tmp_path / "run" / "checkpoints").iterdir())


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
