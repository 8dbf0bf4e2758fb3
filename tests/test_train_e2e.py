"""train() in process: tone learned on held-out speakers; the workdir; export; refusals and stops;
a start from a transformers checkpoint; what the phase switch compiles."""

import json
import os

import numpy as np
import pytest

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (fixture)
from w2v_jax import checkpoint, data
from w2v_jax.models import ConfigError, Wav2Vec2Config
from w2v_jax.train import export_backbone, restore_model, train
from w2v_jax.train.config import fingerprint, resolve_config
from w2v_jax.train.finetune import run_backbone_config

import configs.synthetic_tiny

pytestmark = pytest.mark.timeout(900)


def _tiny_config(corpus, layers=2, **changes):
    """The demo config on `corpus`; `layers` None leaves the architecture to config.init."""
    c = configs.synthetic_tiny.get_config("tone")
    c.data.dir = str(corpus)
    if layers is not None:
        with c.unlocked():
            c.model.num_hidden_layers = layers
    c.update_from_flattened_dict(changes)
    return c


@pytest.fixture(scope="module")
def many_speakers(tmp_path_factory):
    """Tone generalises to new speakers only from many speakers: 60 of 4 utterances each
    (30 of 8 reached 0.40 dev accuracy and then overfitted; 60 of 4 reached 0.46 and rising)."""
    from w2v_jax.data import synthetic
    path = tmp_path_factory.mktemp("speakers") / "corpus"
    synthetic.make_corpus(path, num_speakers=60, utterances_per_speaker=4, seed=3)
    return path


@pytest.fixture(scope="module")
def tone_run(many_speakers, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tone"))
    config = _tiny_config(many_speakers, total_steps=200, freeze_steps=10, log_every=20,
                          eval_every=100, checkpoint_every=100)
    return config, workdir, train(config, workdir)


@pytest.mark.slow
def test_tone_is_learned_on_held_out_speakers(tone_run, many_speakers):
    _, _, summary = tone_run
    dev = data.corpus_split(many_speakers, "dev", Wav2Vec2Config())
    labels = np.concatenate([np.asarray(e["frames"]["tone"]) for e in dev.source])
    chance = np.bincount(labels[labels >= 0]).max() / np.sum(labels >= 0)  # the majority tone
    assert summary["stopped"] == "done" and summary["step"] == 200
    assert summary["dev"]["dev/tone/frames"] == np.sum(labels >= 0)
    assert summary["dev"]["dev/tone/accuracy"] > chance + 0.1, (summary["dev"]["dev/tone/accuracy"], chance)


@pytest.mark.slow
def test_the_workdir_and_the_exported_backbone(tone_run, tmp_path):
    config, workdir, summary = tone_run
    assert json.load(open(os.path.join(workdir, "inventories.json")))["tone"] == ["1", "2", "3", "4", "5"]
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved == {"fingerprint": fingerprint(config), "config": resolve_config(config).to_dict()}
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == list(range(20, 201, 20))
    dev = [r for r in records if "dev/tone/confusion" in r]
    assert [r["step"] for r in dev] == [100, 200]
    assert np.sum(dev[-1]["dev/tone/confusion"]) == dev[-1]["dev/tone/frames"]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(workdir, "tensorboard")))
    # "best" is the checkpoint with the highest dev score in metrics.jsonl (the later if equal).
    scores = {r["step"]: r["dev/accuracy"] for r in dev}
    best = export_backbone(workdir, str(tmp_path / "best"), "best")
    assert best == max(scores, key=lambda s: (scores[s], s))
    exported = checkpoint.load_model(str(tmp_path / "best"))
    kernel = lambda m: np.asarray(m.encoder.layers.attention.q_proj.kernel[...])
    np.testing.assert_array_equal(kernel(exported), kernel(restore_model(workdir, best)[1].wav2vec2))
    # The run's own backbone/, what test accuracy and extraction use, is that same best
    # checkpoint's backbone; it differs from its init.
    final = checkpoint.load_model(os.path.join(workdir, "backbone"))
    assert final.config == run_backbone_config(workdir)
    np.testing.assert_array_equal(kernel(final), kernel(exported))
    from flax import nnx
    from w2v_jax.models import Wav2Vec2Model
    assert not np.array_equal(kernel(final), kernel(Wav2Vec2Model(final.config, rngs=nnx.Rngs(0))))


@pytest.mark.slow
def test_evaluation_takes_the_devices_its_batch_splits_over(tone_run, tmp_path):
    """A run's eval batch may not divide another machine's device count (8 here)."""
    import shutil

    from w2v_jax.train import evaluate_run
    _, workdir, _ = tone_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    with open(copy / "config.json") as f:
        saved = json.load(f)
    saved["config"]["data"]["eval_batch_size"] = 3
    with open(copy / "config.json", "w") as f:
        json.dump(saved, f)
    odd, whole = evaluate_run(str(copy), "dev"), evaluate_run(workdir, "dev")
    assert odd["dev/tone/confusion"] == whole["dev/tone/confusion"]
    assert odd["dev/tone/by_speaker"] == whole["dev/tone/by_speaker"]


@pytest.mark.slow
def test_test_accuracy_by_speaker_equals_each_utterance_alone(tone_run, many_speakers):
    """The per-speaker counts the accuracy bootstrap resamples, against the model run on each
    dev utterance unpadded and counted in numpy."""
    from w2v_jax.train import evaluate_run
    _, workdir, _ = tone_run
    result = evaluate_run(workdir, "dev")
    import jax
    from flax import nnx
    _, model, _ = restore_model(workdir, result["step"])
    split = data.corpus_split(many_speakers, "dev", model.wav2vec2.config)
    graphdef, state = nnx.split(model)
    tone_logits = jax.jit(lambda state, audio: nnx.merge(graphdef, state)(
        audio, jax.numpy.ones_like(audio, jax.numpy.int32), deterministic=True)["tone"][0])
    expected = {}
    for example in split.source:
        audio = np.asarray(example["audio"], np.float32) / 32768.0  # as the pipeline reads it:
        audio = ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]  # per utterance
        logits = np.asarray(tone_logits(state, audio))  # one utterance, no padding
        labels = np.asarray(example["frames"]["tone"])
        valid = labels >= 0
        right, total = expected.get(example["speaker"], (0, 0))
        expected[example["speaker"]] = (right + int(np.sum((np.argmax(logits, -1) == labels) & valid)),
                                        total + int(valid.sum()))
    by = result["dev/tone/by_speaker"]
    assert by["speakers"] == sorted(expected)
    assert [(c, f) for c, f in zip(by["correct"], by["frames"])] == [expected[s] for s in by["speakers"]]
    assert sum(by["frames"]) == result["dev/tone/frames"]


@pytest.mark.slow
def test_another_experiments_workdir_is_not_resumed(tone_run, many_speakers):
    _, workdir, _ = tone_run
    other = _tiny_config(many_speakers, total_steps=200, freeze_steps=10, log_every=20,
                         eval_every=100, checkpoint_every=100,
                         **{"optimizer.learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="optimizer.learning_rate"):
        train(other, workdir)


@pytest.mark.slow
def test_nonfinite_losses_stop_the_run_with_a_checkpoint(synthetic_corpus, tmp_path):  # noqa: F811
    """layer_norm_eps=0 makes the all-zero padded frames 0/0: every update is skipped, then the run stops."""
    config = _tiny_config(synthetic_corpus, total_steps=50, freeze_steps=50, max_nonfinite=3,
                          log_every=1, eval_every=50, checkpoint_every=50,
                          **{"data.batch_size": 8, "data.num_buckets": 1})
    with config.unlocked():
        config.model.layer_norm_eps = 0.0
    summary = train(config, str(tmp_path))
    assert summary == {"step": 3, "stopped": "nonfinite", "dev": {}}
    assert os.path.isdir(tmp_path / "checkpoints" / "3")
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["train/nonfinite_total"] for r in records] == [1, 2, 3]


@pytest.fixture(scope="module")
def hf_run(synthetic_corpus, hf_checkpoints, tmp_path_factory):  # noqa: F811
    """train() from a tiny transformers checkpoint, 2 steps per phase, recording which train
    steps it builds, what each call gets, and every XLA compilation of a train step."""
    import jax
    from w2v_jax.train import step as S

    built, calls, compiles = [], {}, []
    phase = [None]
    real_jit = S.jit_train_step

    def jit_train_step(graphdef, task, groups, tx, mesh, state_sharding):
        built.append(groups)
        jitted = real_jit(graphdef, task, groups, tx, mesh, state_sharding)

        def call(state, batch):
            phase[0] = groups
            calls.setdefault(groups, []).append(batch["input_values"].shape)
            return jitted(state, batch)
        return call

    def listen(event, duration, **kwargs):  # jax reports each executable it builds
        if event == "/jax/core/compile/backend_compile_duration" and "train_step" in str(
                kwargs.get("fun_name")):
            compiles.append(phase[0])

    workdir = str(tmp_path_factory.mktemp("hf-init"))
    config = _tiny_config(synthetic_corpus, layers=None, init="hf:" + hf_checkpoints["layer"],
                          total_steps=4, freeze_steps=2, freeze_feature_encoder=True, log_every=1,
                          eval_every=2, checkpoint_every=2, max_eval_batches=1,
                          **{"data.batch_size": 8, "data.eval_batch_size": 8})
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(S, "jit_train_step", jit_train_step)
            summary = train(config, workdir)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return workdir, summary, {"built": built, "calls": calls, "compiles": compiles}


@pytest.mark.slow
def test_training_from_a_transformers_checkpoint_starts_from_its_weights(hf_run, hf_checkpoints):
    """init=hf:DIR: the backbone trained in phase 2 starts as the checkpoint's tensors. Phase 1
    leaves the backbone as it is, so the checkpoint at freeze_steps holds the starting weights;
    converted back to transformers' layout they equal every tensor of model.safetensors."""
    from safetensors.numpy import load_file
    from w2v_jax.hf.convert import to_state_dict
    from w2v_jax.train.export import restore_model

    workdir, summary, _ = hf_run
    assert summary["stopped"] == "done" and summary["step"] == 4
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert np.isfinite([r["train/loss"] for r in logged]).all() and logged[-1]["train/nonfinite_total"] == 0
    hf = load_file(os.path.join(hf_checkpoints["layer"], "model.safetensors"))
    _, start, step = restore_model(workdir, 2)
    assert step == 2
    ours = to_state_dict(start.wav2vec2)
    # masked_spec_embed is written only with SpecAugment on; the run has it off.
    assert set(hf) - set(ours) == {"masked_spec_embed"} and set(ours) <= set(hf)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, hf[key], err_msg=key)
    # Phase 2 trained the transformer and left the frozen CNN as loaded.
    _, end, _ = restore_model(workdir, 4)
    trained = to_state_dict(end.wav2vec2)
    for key, value in trained.items():
        if key.startswith("feature_extractor."):
            np.testing.assert_array_equal(value, hf[key], err_msg=key)
    assert not np.array_equal(trained["encoder.layers.0.attention.q_proj.weight"],
                              hf["encoder.layers.0.attention.q_proj.weight"])


@pytest.mark.slow
def test_the_phase_switch_compiles_one_more_train_step_per_padded_length(hf_run):
    """Each phase builds its train step once; XLA compiles each exactly once per padded batch
    length it is called with, so the switch to phase 2 adds one program per length (the
    trivial program laying out the backbone's zeroed Adam state is not a train step)."""
    _, _, seen = hf_run
    assert seen["built"] == [0, 1]  # the phases
    assert {g: len(shapes) for g, shapes in seen["calls"].items()} == {0: 2, 1: 2}
    for groups, shapes in seen["calls"].items():
        assert seen["compiles"].count(groups) == len(set(shapes)), (groups, shapes, seen["compiles"])
