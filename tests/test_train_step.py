"""The jitted train step: what each phase changes, skipped non-finite updates, accumulation, sharding
(data, fsdp and tensor axes), head dropout.

A 2-layer tiny model on half-second random audio keeps compiling cheap; the
programs are shared through module fixtures.
"""

import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from w2v_jax import sharding
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.train import FineTuning, default_config
from w2v_jax.train import step as S
from w2v_jax.train.heads import FrameClassifier

SAMPLES, BATCH = 8000, 8
pytestmark = pytest.mark.timeout(600)


def _config(tasks=("tone",), **changes):
    c = default_config()
    c.data.dir = os.path.dirname(__file__)  # a directory that exists; no data is read
    c.tasks = {t: 1.0 for t in tasks}
    c.total_steps, c.freeze_steps = 10, 1
    c.optimizer.learning_rate = 1e-2
    # A first Adam step is g / (|g| + eps): with a large eps it stays proportional to tiny
    # gradients, so rounding noise (which differs between meshes) is not blown up to +-lr.
    c.optimizer.eps = 1e-3
    c.optimizer.warmup_ratio, c.optimizer.hold_ratio, c.optimizer.decay_ratio = 0.0, 1.0, 0.0
    for key, value in changes.items():
        setattr(c, key, value)
    return c


def _model(tasks, head_dropout=0.0):
    """No dropout, LayerDrop or masking: results comparable across meshes (the run tests cover RNG)."""
    cfg = Wav2Vec2Config.preset("tiny", num_hidden_layers=2, layerdrop=0.0, hidden_dropout=0.0,
                                attention_dropout=0.0, mask_time_prob=0.0)
    return FrameClassifier(Wav2Vec2Model(cfg, rngs=nnx.Rngs(0)), tasks, head_dropout=head_dropout,
                           rngs=nnx.Rngs(1))


def _batch(tasks, accum=1, seed=0):
    rng = np.random.default_rng(seed)
    frames = Wav2Vec2Config.preset("tiny").num_frames(SAMPLES)
    lengths = rng.integers(SAMPLES // 2, SAMPLES + 1, (accum, BATCH))
    mask = (np.arange(SAMPLES) < lengths[..., None]).astype(np.int32)
    batch = {"input_values": (rng.normal(size=(accum, BATCH, SAMPLES)) * mask).astype(np.float32),
             "attention_mask": mask}
    for task in tasks:
        classes = {"tone": 5, "sex": 2}[task]
        labels = rng.integers(-1, classes, (accum, BATCH, frames)).astype(np.int32)
        labels[np.arange(frames) >= Wav2Vec2Config.preset("tiny").num_frames(lengths)[..., None]] = -1
        batch[f"labels/{task}"] = labels
    return batch


def _task(config, model):
    return FineTuning(config, model.wav2vec2.config)


def _groups(state):
    """The optimizer's per-group states."""
    return optax.tree_utils.tree_get(state["opt"], "inner_states")


def _run(config, model, groups, batches, mesh):
    """State after the phase's steps on `batches` (phase 2 entered from phase 1, as the loop does)."""
    graphdef, params, rng = S.split_model(model)
    task = _task(config, model)
    phases = S.Phases(task)
    phase = 1 if "backbone" in groups else 0
    state = phases.initial_state(params, rng, 0)
    if phase:
        state = phases.enter(state, phase)
    shardings = sharding.state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    step = S.jit_train_step(graphdef, task, phase, phases.optimizers[phase], mesh, shardings)
    metrics = []
    for batch in batches:
        state, m = step(state, jax.device_put(batch, S.batch_shardings(mesh)))
        metrics.append(jax.device_get(m))
    return jax.device_get(state), metrics, step


def _flat(params):
    return {"/".join(map(str, k)): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
            for k, v in nnx.to_flat_state(params)}


@pytest.fixture(scope="module")
def one_device():
    return sharding.make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def before():
    return _flat(S.split_model(_model(("tone", "sex")))[1])


@pytest.fixture(scope="module")
def phase1(one_device):
    config = _config(("tone", "sex"))
    return _run(config, _model(("tone", "sex")), ("heads",), [_batch(("tone", "sex"))], one_device)


@pytest.fixture(scope="module")
def phase2(one_device):
    config = _config(("tone", "sex"))
    return _run(config, _model(("tone", "sex")), ("heads", "backbone"),
                [_batch(("tone", "sex"))], one_device)


def test_phase1_moves_only_the_heads(phase1, before):
    state, metrics, _ = phase1
    after = _flat(state["params"])
    assert metrics[0]["finite"]
    for path, value in before.items():
        if path.startswith("heads/"):
            assert not np.array_equal(after[path], value), path  # multi-task: both heads learn
        else:
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert any(p.startswith("heads/sex") for p in before) and any(p.startswith("heads/tone") for p in before)
    # The backbone holds no optimizer state in phase 1.
    assert set(_groups(state)) == {"heads", "frozen"}
    moments = [p for p, _ in jax.tree_util.tree_flatten_with_path(_groups(state))[0]]
    assert moments and all("wav2vec2" not in jax.tree_util.keystr(p) for p in moments)


def test_phase2_moves_the_backbone_but_not_the_cnn(phase2, before):
    state, metrics, _ = phase2
    after = _flat(state["params"])
    assert metrics[0]["finite"]
    changed = {p for p in before if not np.array_equal(after[p], before[p])}
    cnn = {p for p in before if p.startswith("wav2vec2/feature_extractor/")}
    assert cnn and not cnn & changed
    assert {p for p in before if p.startswith("wav2vec2/encoder/layers/")} <= changed
    assert "wav2vec2/feature_projection/projection/kernel" in changed
    assert set(_groups(state)) == {"heads", "backbone", "frozen"}
    backbone_moments = jax.tree_util.tree_leaves(_groups(state)["backbone"])
    assert len(backbone_moments) == 1 + 2 * (len(before) - len(cnn) - 4)  # count, mu, nu; 4 = heads' leaves


def test_the_feature_encoder_is_trainable_unless_frozen(before):
    model = _model(("tone",))
    params = S.split_model(model)[1]
    for freeze in (True, False):
        task = _task(_config(freeze_feature_encoder=freeze), model)
        trained, _ = nnx.split_state(params, S.trainable_filter(task, 1), ...)
        cnn = [p for p, _ in nnx.to_flat_state(trained) if "feature_extractor" in p]
        assert len(cnn) == (0 if freeze else sum("feature_extractor" in p for p in before))
        heads_only, _ = nnx.split_state(params, S.trainable_filter(task, 0), ...)
        assert {path[0] for path, _ in nnx.to_flat_state(heads_only)} == {"heads"}


@pytest.mark.slow
def test_a_nonfinite_loss_skips_the_update(phase1, before, one_device):
    _, _, step = phase1
    model = _model(("tone", "sex"))
    graphdef, params, rng = S.split_model(model)
    state = S.Phases(_task(_config(("tone", "sex")), model)).initial_state(params, rng, 0)
    state = jax.device_put(state, sharding.state_shardings(state, one_device))
    batch = _batch(("tone", "sex"))
    batch["input_values"][0, 0, 100] = np.nan
    state, metrics = step(state, batch)
    assert not bool(metrics["finite"])
    assert (int(metrics["nonfinite_streak"]), int(metrics["nonfinite_total"])) == (1, 1)
    after = _flat(jax.device_get(state["params"]))
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    assert int(state["step"]) == 1
    assert int(_groups(state)["heads"].inner_state.count) == 0  # the skipped step left Adam untouched


@pytest.mark.slow
def test_accumulation_averages_over_every_frame_of_the_accumulated_batch(one_device):
    """grad_accum=2 over two different micro-batches (different numbers of labelled frames) makes
    the update of one batch holding both: the loss is the mean over all their frames, not the
    mean of the two micro-batch means."""
    tasks = ("tone", "sex")
    first, second = _batch(tasks, seed=1), _batch(tasks, seed=2)
    second["labels/tone"][0, :, 5:] = -1  # far fewer tone frames in the second micro-batch
    counts = [int(np.sum(b["labels/tone"] >= 0)) for b in (first, second)]
    assert counts[0] > 2 * counts[1]
    accumulated = {k: np.concatenate([first[k], second[k]]) for k in first}  # (2, BATCH, ...)
    whole = {k: np.concatenate([first[k], second[k]], axis=1) for k in first}  # (1, 2 BATCH, ...)
    state, metrics, _ = _run(_config(tasks), _model(tasks), ("heads", "backbone"),
                             [whole], one_device)
    config = _config(tasks)
    config.optimizer.grad_accum = 2
    acc_state, acc_metrics, _ = _run(config, _model(tasks), ("heads", "backbone"), [accumulated],
                                     one_device)
    np.testing.assert_allclose(acc_metrics[0]["loss"], metrics[0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(acc_metrics[0]["tone/accuracy"], metrics[0]["tone/accuracy"], rtol=1e-6)
    np.testing.assert_allclose(acc_metrics[0]["grad_norm"], metrics[0]["grad_norm"], rtol=1e-4)
    for path, value in _flat(state["params"]).items():
        np.testing.assert_allclose(_flat(acc_state["params"])[path], value, rtol=1e-4, atol=1e-6,
                                   err_msg=path)


@pytest.mark.slow
@pytest.mark.parametrize("axes", [dict(data=4, fsdp=2), dict(data=2, fsdp=2, tensor=2)],
                         ids=["data4-fsdp2", "data2-fsdp2-tensor2"])
def test_eight_devices_match_one(phase2, axes):
    """A mesh over 8 simulated devices (data x fsdp, or with the tensor axis splitting attention
    and feed-forward): the same loss, gradient norm and parameters as one device."""
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(**axes)
    one, m1, _ = phase2
    # Each split axis really shards parameters (the tensor rules apply to the tiny model's sizes).
    used = {axis for s in jax.tree.leaves(sharding.state_shardings(one["params"], mesh))
            for entry in s.spec for axis in (entry if isinstance(entry, tuple) else (entry,))}
    assert {a for a in ("fsdp", "tensor") if mesh.shape[a] > 1} <= used
    eight, m8, _ = _run(_config(("tone", "sex")), _model(("tone", "sex")), ("heads", "backbone"),
                        [_batch(("tone", "sex"))], mesh)
    np.testing.assert_allclose(m8[0]["loss"], m1[0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8[0]["grad_norm"], m1[0]["grad_norm"], rtol=1e-5)
    # d(update)/d(gradient) reaches lr / eps = 10 for gradients near 0, so 1e-6 of gradient
    # rounding (reductions split differently over 8 devices) may move a parameter by 1e-5;
    # a real sharding error moves them by about lr.
    for path, value in _flat(one["params"]).items():
        np.testing.assert_allclose(_flat(eight["params"])[path], value, rtol=1e-4, atol=1e-5, err_msg=path)


@pytest.mark.slow
def test_head_dropout_acts_in_training_only():
    """head_dropout > 0: two training forwards differ (fresh masks), evaluation equals that of the
    same weights with head_dropout=0. The backbone has no randomness here: its training forward
    equals evaluation, so the differences come from the heads."""
    batch = _batch(("tone",))
    inputs = (batch["input_values"][0, :2], batch["attention_mask"][0, :2])

    @nnx.jit
    def forwards(model):  # evaluation, then two training draws
        return [model(*inputs, deterministic=d)["tone"] for d in (True, False, False)]

    evaluation, plain_training, _ = map(np.asarray, forwards(_model(("tone",))))
    np.testing.assert_array_equal(plain_training, evaluation)
    dropped_evaluation, first, second = map(np.asarray, forwards(_model(("tone",), head_dropout=0.5)))
    np.testing.assert_array_equal(dropped_evaluation, evaluation)
    assert np.isfinite(first).all() and np.isfinite(second).all()
    for training in (first, second):
        assert np.abs(training - evaluation).max() > 1e-2  # half the features dropped
    assert np.abs(first - second).max() > 1e-2  # a new mask per draw
