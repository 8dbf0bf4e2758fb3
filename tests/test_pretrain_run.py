"""Pre-training on the one loop: the configs, distractor indices through accumulation padding,
the collapse warning; and whole runs of `python -m launch.pretrain` (slow): SIGTERM then
resume is bitwise exact, the exported model loads in transformers (same outputs) and as a
fine-tuning init.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (fixture)
from w2v_jax.models import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL = 8
TINY_CONFIG = f"""
from configs.pretrain_small import get_config as small


def get_config():
    c = small()
    c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=4)
    c.pretraining.update(num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16)
    c.objective.num_negatives, c.objective.temperature_decay = 10, 0.99908
    c.data.update(batch_size=4, eval_batch_size=4, max_seconds=1.0, min_seconds=0.5, num_buckets=1)
    c.optimizer.grad_accum = 2
    c.optimizer.learning_rate = 2e-3
    c.total_steps = {TOTAL}
    c.log_every, c.eval_every, c.checkpoint_every, c.max_eval_batches = 1, 2, 2, 1
    return c
"""


def _tiny_config(corpus):
    import configs.pretrain_small
    c = configs.pretrain_small.get_config()
    c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    c.pretraining.update(num_codevectors_per_group=8, codevector_dim=16, proj_codevector_dim=16)
    c.objective.num_negatives, c.objective.temperature_decay = 10, 0.99908
    c.data.update(dir=corpus, batch_size=8, eval_batch_size=8, min_seconds=0.5)
    return c


# ------------------------------------------------------------------------------ fast
def test_large_config_has_fairseqs_lv60_recipe():
    import configs.pretrain_large
    c = configs.pretrain_large.get_config()
    # fairseq examples/wav2vec/config/pretraining/wav2vec2_large_librivox.yaml
    assert (c.optimizer.learning_rate, c.optimizer.b1, c.optimizer.b2, c.optimizer.eps,
            c.optimizer.weight_decay, c.optimizer.name) == (0.005, 0.9, 0.98, 1e-6, 0.01, "adamw")
    assert c.total_steps == 1_000_000 and c.optimizer.warmup_ratio * c.total_steps == 32_000
    assert (c.objective.diversity_weight, c.objective.feature_penalty_weight,
            c.objective.feature_grad_mult) == (0.1, 0.0, 1.0)
    assert (c.objective.max_temperature, c.objective.min_temperature,
            c.objective.temperature_decay) == (2.0, 0.1, 0.999995)
    assert (c.pretraining.num_codevector_groups, c.pretraining.num_codevectors_per_group,
            c.pretraining.codevector_dim, c.pretraining.proj_codevector_dim) == (2, 320, 768, 768)
    assert (c.data.max_seconds * 16000, c.data.min_seconds * 16000) == (320000, 32000)
    from w2v_jax.train.pretraining import model_config
    m = model_config(c)
    assert (m.hidden_size, m.num_hidden_layers, m.do_stable_layer_norm, m.feat_extract_norm,
            m.conv_bias, m.layerdrop, m.hidden_dropout, m.attention_dropout) == (
        1024, 24, True, "layer", True, 0.0, 0.0, 0.0)


def test_config_errors_name_the_key(synthetic_corpus):  # noqa: F811
    from w2v_jax.train.pretraining import PreTraining
    c = _tiny_config(synthetic_corpus)
    c.objective.mask_prob = 1.5
    with pytest.raises(ConfigError, match=r"config.objective.mask_prob=1.5"):
        PreTraining(c)
    c = _tiny_config(synthetic_corpus)
    c.model.hidden_size = 30  # 2 heads divide it, 4 position-conv groups do not
    with pytest.raises(ConfigError, match=r"config.model.num_conv_pos_embedding_groups"):
        PreTraining(c)
    c = _tiny_config(synthetic_corpus)
    c.data.min_seconds = 0.05
    with pytest.raises(ConfigError, match=r"config.data.min_seconds"):
        PreTraining(c)


def test_stacked_micro_batches_keep_every_distractor(synthetic_corpus):  # noqa: F811
    """Micro-batches padded to the longest keep their masks and distractor frames; under jit
    they become pretrain's flat indices row * T + frame of the same row and frame."""
    from w2v_jax.train.pretraining import PreTraining, flat_negatives, with_masks
    task = PreTraining(_tiny_config(synthetic_corpus))
    cfg, rng = task.model_config, np.random.default_rng(0)
    micro = []
    for samples in (16000, 24000):
        lengths = np.array([samples, samples - 3000, samples - 7000, 9000])
        mask = (np.arange(samples)[None] < lengths[:, None]).astype(np.int32)
        micro.append(with_masks({"input_values": rng.standard_normal((4, samples)).astype(np.float32) * mask,
                                 "attention_mask": mask}, rng, cfg, task.objective))
    stacked = task.stack(micro)
    frames = stacked["mask_time_indices"].shape[2]
    assert frames == cfg.num_frames(24000) and stacked["input_values"].shape == (2, 4, 24000)
    for i, m in enumerate(micro):
        t = m["mask_time_indices"].shape[1]
        assert not stacked["mask_time_indices"][i, :, t:].any()
        np.testing.assert_array_equal(stacked["mask_time_indices"][i, :, :t], m["mask_time_indices"])
        rows, steps = np.nonzero(m["mask_time_indices"])
        flat = np.asarray(flat_negatives({k: v[i] for k, v in stacked.items()})
                          ["sampled_negative_indices"])[rows, steps]  # (M, K)
        np.testing.assert_array_equal(flat // frames, np.broadcast_to(rows[:, None], flat.shape))
        np.testing.assert_array_equal(flat % frames, m["negative_frames"][rows, steps])
        # Distractors are other masked frames of the same row (pretrain.sample_distractors).
        assert m["mask_time_indices"][rows[:, None], flat % frames].all()
        assert (flat % frames != steps[:, None]).all()


def test_dev_summary_warns_when_a_codebook_collapses(synthetic_corpus, caplog):  # noqa: F811
    from w2v_jax.train.pretraining import PreTraining
    task = PreTraining(_tiny_config(synthetic_corpus))  # 2 groups of 8 codewords
    stats = {"loss_sum": 50.0, "num_masked": 10.0, "contrastive": 30.0, "correct": 4.0,
             "code_perplexity": np.array([6.0, 0.5]) * 10, "prob_perplexity": np.array([7.0, 2.0]) * 10}
    with caplog.at_level(logging.WARNING):
        dev = task.summarize(stats)
    assert dev["dev/loss"] == 5.0 and dev["dev/accuracy"] == 0.4 and dev["dev/contrastive_loss"] == 3.0
    assert dev["dev/code_perplexity/g1"] == 0.5 and dev["dev/collapsed_groups"] == 1
    assert "codebook collapse" in caplog.text and "[1]" in caplog.text


# ------------------------------------------------------------------------------ slow
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache")
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device per run
    return {**base, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_pretrain.py"
    path.write_text(TINY_CONFIG)
    return str(path)


def _command(config_file, corpus, workdir):
    return [sys.executable, "-m", "launch.pretrain", f"--config={config_file}",
            f"--workdir={workdir}", f"--config.data.dir={corpus}"]


def _losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


@pytest.fixture(scope="module")
def reference(config_file, synthetic_corpus, env, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("reference")
    result = subprocess.run(_command(config_file, synthetic_corpus, workdir), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_a_run_logs_every_metric_and_exports_a_model(reference):
    with open(reference / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, TOTAL + 1))
    for key in ("loss", "contrastive_loss", "diversity_loss", "feature_penalty", "accuracy",
                "temperature", "grad_norm", "learning_rate", "prob_perplexity/g0",
                "prob_perplexity/g1", "code_perplexity/g0", "code_perplexity/g1", "masked_frames"):
        assert all(np.isfinite(r[f"train/{key}"]) for r in train), key
    # The temperature of the steps: fairseq's max(2 * decay ** step, 0.5), the config's decay.
    np.testing.assert_allclose([r["train/temperature"] for r in train],
                               [max(2 * 0.99908 ** s, 0.5) for s in range(TOTAL)], rtol=1e-6)
    assert all(1 <= r["train/prob_perplexity/g0"] <= 8 for r in train)
    dev = [r for r in records if "dev/loss" in r]
    assert [r["step"] for r in dev] == list(range(2, TOTAL + 1, 2))
    assert all(0 <= r["dev/accuracy"] <= 1 and r["dev/masked_frames"] > 0 for r in dev)
    assert os.path.exists(reference / "model" / "pretraining.json")
    assert os.path.exists(reference / "tensorboard")
    # The exported model carries how it was trained: its run's dev evaluations and last train row.
    with open(reference / "model" / "training.json") as f:
        record = json.load(f)
    assert record["dev"] == dev and record["last_train"] == train[-1]
    assert record["config"]["total_steps"] == TOTAL and record["data"]["train"]["files"] > 0
    assert os.path.getsize(reference / "model" / "curves.png") > 10_000


@pytest.mark.slow
def test_sigterm_then_resume_is_bitwise_exact(config_file, synthetic_corpus, env, reference,  # noqa: F811
                                              tmp_path):
    from w2v_jax import checkpoint
    workdir = tmp_path / "run"
    process = subprocess.Popen(_command(config_file, synthetic_corpus, workdir), env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if (workdir / "metrics.jsonl").exists() and len(_losses(workdir)) >= 3:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    stopped = max(_losses(workdir))
    assert f"stopped at step {stopped}: preempted" in stdout and stopped < TOTAL
    assert not (workdir / "model").exists()  # an unfinished run is not exported
    result = subprocess.run(_command(config_file, synthetic_corpus, workdir), env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _losses(workdir) == _losses(reference)  # every step, bitwise (JSON floats round-trip)
    ours = checkpoint.load_pretraining_model(str(workdir / "model"))
    theirs = checkpoint.load_pretraining_model(str(reference / "model"))
    from flax import nnx
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(ours, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(theirs, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


@pytest.mark.slow
def test_the_export_loads_in_transformers_and_as_a_finetuning_init(reference, env, tmp_path):
    from flax import nnx

    from tests.tiny_hf import check_transformers_export
    from w2v_jax import checkpoint
    from w2v_jax.train import build
    from w2v_jax.train.config import default_config

    check_transformers_export(str(reference / "model"), str(tmp_path / "hf"), env)
    ours = checkpoint.load_pretraining_model(str(reference / "model"))

    exported = tmp_path / "exported"  # launch.pretrain --export_model: the same final step
    from w2v_jax.train.pretraining import export_model
    assert export_model(str(reference), str(exported), "latest") == TOTAL
    with open(exported / "training.json") as f:
        assert json.load(f)["exported_step"] == TOTAL
    again = checkpoint.load_pretraining_model(str(exported))
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(again, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(ours, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))

    c = default_config()
    c.init = f"model:{reference / 'model'}"
    backbone = build.backbone(c, build.backbone_config(c))  # what fine-tuning's init loads
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(backbone, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(ours.wav2vec2, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))
