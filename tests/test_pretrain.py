"""Pre-training objective: parity with transformers, samplers, fairseq normalisation, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from tests.tiny_hf import TINY_PRETRAINING, VARIANTS, tiny_hf_config
from w2v_jax import pretrain
from w2v_jax.hf import load_pretrained
from w2v_jax.models import Wav2Vec2Config
from w2v_jax.models.pretraining import PretrainingConfig, Wav2Vec2ForPreTraining
from w2v_jax.models.quantizer import GumbelQuantizer


def batch_for(variant, frames_of):
    """Audio, sample mask, span mask and distractors. Group-norm models are compared on an
    unpadded batch: there transformers' first group norm counts padding (BUILD_NOTES)."""
    rng = np.random.default_rng(1)
    lengths = np.array([9600, 9600]) if variant == "group" else np.array([9600, 7000, 4800])
    mask = (np.arange(lengths.max())[None] < lengths[:, None]).astype(np.int32)
    audio = (rng.normal(size=mask.shape) * mask).astype(np.float32)
    frames = frames_of(lengths)
    sampled = pretrain.sample_batch(rng, frames, frames.max(), pretrain.Objective(num_negatives=7))
    return audio, mask, sampled


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eval_losses_equal_transformers(hf_pretraining_checkpoints, variant):
    path = hf_pretraining_checkpoints[variant]
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(path).eval()
    ours = load_pretrained(path, pretraining=True)
    audio, mask, sampled = batch_for(variant, ours.config.num_frames)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(audio), attention_mask=torch.from_numpy(mask),
                          mask_time_indices=torch.from_numpy(sampled["mask_time_indices"]),
                          sampled_negative_indices=torch.from_numpy(
                              sampled["sampled_negative_indices"]).long())
    got = jax.jit(lambda a, m, t, n: pretrain.pretraining_loss(ours, a, m, t, n))(
        audio, mask, sampled["mask_time_indices"], sampled["sampled_negative_indices"])
    for name in ("contrastive_loss", "diversity_loss"):
        np.testing.assert_allclose(float(got[name]), float(getattr(expected, name)), rtol=1e-4,
                                   err_msg=name)
    np.testing.assert_allclose(float(got["code_perplexity"]), float(expected.codevector_perplexity),
                               rtol=1e-5)
    assert float(got["num_masked"]) == sampled["mask_time_indices"].sum()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eval_gradients_equal_transformers(hf_pretraining_checkpoints, variant):
    """Training follows the gradient, not the loss: d contrastive_loss / d every parameter
    equals transformers' autograd (eval mode, the CNN gradient unscaled as transformers has it)."""
    from w2v_jax.hf.convert import to_state_dict

    path = hf_pretraining_checkpoints[variant]
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(path).eval()
    ours = load_pretrained(path, pretraining=True)
    audio, mask, sampled = batch_for(variant, ours.config.num_frames)
    theirs(torch.from_numpy(audio), attention_mask=torch.from_numpy(mask),
           mask_time_indices=torch.from_numpy(sampled["mask_time_indices"]),
           sampled_negative_indices=torch.from_numpy(
               sampled["sampled_negative_indices"]).long()).contrastive_loss.backward()
    expected = {name: p.grad.numpy() for name, p in theirs.named_parameters() if p.grad is not None}

    graphdef, params, rest = nnx.split(ours, nnx.Param, ...)
    unscaled = pretrain.Objective(num_negatives=7, feature_grad_mult=1.0)

    def contrastive(p):
        return pretrain.pretraining_loss(nnx.merge(graphdef, p, rest), audio, mask,
                                         sampled["mask_time_indices"],
                                         sampled["sampled_negative_indices"],
                                         objective=unscaled)["contrastive_loss"]

    got = to_state_dict(nnx.merge(graphdef, jax.jit(jax.grad(contrastive))(params), rest))
    assert len(expected) > 20 and set(expected) <= set(got), set(expected) - set(got)
    for name, grad in expected.items():
        scale = np.linalg.norm(grad)
        assert np.linalg.norm(got[name] - grad) <= 1e-4 * scale + 1e-7, (name, scale)


# ----------------------------------------------------------------------- samplers
def test_span_mask_covers_only_real_frames_in_spans():
    rng = np.random.default_rng(0)
    lengths = np.array([200, 150, 37, 5])
    mask = pretrain.span_mask(rng, lengths, 200)
    assert not mask[np.arange(200)[None] >= lengths[:, None]].any()  # never padding
    for row, length in enumerate(lengths[:3]):
        # every run of masked frames is a union of 10-frame spans, except at the end of the audio
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask[row].astype(int), [0]])))
        runs = edges.reshape(-1, 2)
        assert all(end - start >= 10 or end == length for start, end in runs)
    # masked fraction: 1 - (1 - 10 / n) ** (0.65 n / 10) in expectation, about 0.49 for n = 200
    fraction = np.mean([pretrain.span_mask(rng, [200], 200).mean() for _ in range(400)])
    assert abs(fraction - (1 - (1 - 10 / 200) ** 13)) < 0.02


def test_span_mask_counts_follow_fairseq():
    """p=0.15, span 10, n=100: int(1.5 + u) is 1 or 2 spans, half the time each: 10 frames,
    or 11-20 when two spans overlap or not; min_masks=3 forces at least 3 spans."""
    rng = np.random.default_rng(3)
    objective = pretrain.Objective(mask_prob=0.15, min_masks=1)
    sums = np.array([pretrain.span_mask(rng, [100], 100, objective).sum() for _ in range(200)])
    assert set(sums) <= set(range(10, 21)) and 60 < np.sum(sums == 10) < 140
    objective = pretrain.Objective(mask_prob=0.15, min_masks=3)
    sums = np.array([pretrain.span_mask(rng, [100], 100, objective).sum() for _ in range(50)])
    assert sums.min() > 10 and sums.max() <= 30


def test_distractors_are_other_masked_frames_of_the_row_uniformly():
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 30), bool)
    mask[0, [1, 4, 5, 9]] = True
    mask[1, 10:25] = True
    negatives = pretrain.sample_distractors(rng, mask, 4000)
    for row in range(2):
        for t in np.flatnonzero(mask[row]):
            drawn = negatives[row, t] - row * 30
            others = set(np.flatnonzero(mask[row])) - {t}
            assert set(drawn) == others  # only other masked frames, each of them drawn
            counts = np.bincount(drawn, minlength=30)[sorted(others)]
            expected = 4000 / len(others)
            assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    with pytest.raises(ValueError, match="at least 2"):
        pretrain.sample_distractors(rng, np.eye(1, 5, dtype=bool), 3)


def test_samples_are_reproducible_from_seed_and_step():
    def draw(step):
        return pretrain.sample_batch(np.random.default_rng((7, step, 0)), [120, 80], 120)

    a, b, c = draw(5), draw(5), draw(6)
    np.testing.assert_array_equal(a["sampled_negative_indices"], b["sampled_negative_indices"])
    assert not np.array_equal(a["mask_time_indices"], c["mask_time_indices"])


def test_temperature_schedule():
    assert pretrain.gumbel_temperature(0) == pytest.approx(2.0)
    assert pretrain.gumbel_temperature(100_000) == pytest.approx(2 * 0.999995 ** 100_000, rel=1e-6)
    assert pretrain.gumbel_temperature(400_000) == pytest.approx(0.5)  # 2 * e^-2 < 0.5: clamped
    assert float(pretrain.gumbel_temperature(jnp.asarray(100_000))) == pytest.approx(
        2 * 0.999995 ** 100_000, rel=1e-6)


# ------------------------------------------------------------------ quantizer
@pytest.mark.slow
def test_straight_through_is_hard_forward_soft_backward():
    quantizer = GumbelQuantizer(6, 2, 5, 4, rngs=nnx.Rngs(0))
    features = jax.random.normal(jax.random.key(1), (2, 3, 6))
    key, tau = jax.random.key(2), 0.7
    out = quantizer(features, key=key, temperature=tau)
    codebook = np.asarray(quantizer.codevectors[...]).reshape(2, 5, 2)
    picked = codebook[np.arange(2)[None, None], np.asarray(out.codes)].reshape(2, 3, 4)
    np.testing.assert_array_equal(np.asarray(out.codevectors), picked)  # exactly the codewords

    def through(f, soft):
        logits = quantizer.weight_proj(f).reshape(2, 3, 2, 5)
        y = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / tau, -1)
        if not soft:
            return jnp.sum(quantizer(f, key=key, temperature=tau).codevectors * weights)
        return jnp.sum(jnp.einsum("btgv,gvd->btgd", y, codebook).reshape(2, 3, 4) * weights)

    weights = jax.random.normal(jax.random.key(3), (2, 3, 4))
    hard_grad = jax.jit(jax.grad(through), static_argnums=1)
    np.testing.assert_allclose(hard_grad(features, False), hard_grad(features, True),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------- fairseq normalisation
class _Fixed:
    """A stand-in model with hand-set outputs, to check the loss arithmetic."""

    def __init__(self, out, pretraining):
        self.out, self.pretraining = out, pretraining

    def __call__(self, *args, **kwargs):
        return self.out


@pytest.mark.slow
def test_fairseq_loss_against_a_hand_worked_example():
    from w2v_jax.models.pretraining import PreTrainingOutput

    # One row, 3 frames, frames 0 and 1 masked, 1 distractor each (the other masked frame).
    pred = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    target = np.array([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    codes = np.array([[[0], [1], [1]]], np.int32)
    probs = np.array([[[[0.5, 0.5]], [[1.0, 0.0]], [[0.2, 0.8]]]])  # G = 1, V = 2
    conv = np.array([[[1.0, 3.0], [0.0, 2.0], [2.0, 2.0]]])
    out = PreTrainingOutput(projected_states=jnp.asarray(pred), projected_quantized_states=jnp.asarray(target),
                            codes=jnp.asarray(codes), code_probs=jnp.asarray(probs),
                            conv_features=jnp.asarray(conv), frame_mask=jnp.array([[True, True, False]]))
    model = _Fixed(out, PretrainingConfig(num_codevector_groups=1, num_codevectors_per_group=2,
                                          codevector_dim=2, proj_codevector_dim=2))
    mask = np.array([[True, True, False]])
    negatives = np.array([[[1], [0], [2]]])
    got = pretrain.pretraining_loss(model, None, None, mask, negatives)

    # frame 0: cos(pred0, target0) = 1, cos(pred0, target1) = 1/sqrt2; frame 1: 1/sqrt2 vs 0
    ce0 = np.log(np.exp(10) + np.exp(10 / np.sqrt(2))) - 10
    ce1 = np.log(np.exp(10 / np.sqrt(2)) + 1) - 10 / np.sqrt(2)
    prob_ppl = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))  # mean of frames 0, 1
    code_ppl = 2.0  # codes 0 and 1 once each
    penalty = (1 + 9 + 0 + 4) / 4  # real frames 0, 1 only
    expected_sum = ce0 + ce1 + 0.1 * 2 * (2 - prob_ppl) / 2 + 10 * 2 * penalty
    np.testing.assert_allclose(float(got["contrastive_loss"]), ce0 + ce1, rtol=1e-5)
    np.testing.assert_allclose(float(got["diversity_loss"]), 2 * (2 - code_ppl) / 2, atol=1e-6)
    np.testing.assert_allclose(float(got["prob_perplexity"]), prob_ppl, rtol=1e-5)
    np.testing.assert_allclose(float(got["loss_sum"]), expected_sum, rtol=1e-5)
    np.testing.assert_allclose(float(got["loss"]), expected_sum / 2, rtol=1e-5)
    assert float(got["num_masked"]) == 2 and float(got["accuracy"]) == 1.0

    # A distractor with the positive's codewords is excluded (-inf), as fairseq's neg_is_pos.
    same = out.replace(codes=jnp.zeros_like(out.codes))
    got = pretrain.pretraining_loss(_Fixed(same, model.pretraining), None, None, mask, negatives)
    np.testing.assert_allclose(float(got["contrastive_loss"]), 0.0, atol=1e-6)


# ------------------------------------------------------------------- training
@pytest.mark.slow
def test_training_step_gradients_and_feature_grad_mult():
    config = Wav2Vec2Config.from_hf(tiny_hf_config("layer").to_dict(), num_hidden_layers=1)
    model = Wav2Vec2ForPreTraining(config, PretrainingConfig(**TINY_PRETRAINING), rngs=nnx.Rngs(0))
    lengths = np.array([4800, 3600])
    mask = (np.arange(4800)[None] < lengths[:, None]).astype(np.int32)
    audio = np.random.default_rng(0).normal(size=mask.shape).astype(np.float32) * mask
    sampled = pretrain.sample_batch(np.random.default_rng(1), config.num_frames(lengths),
                                    config.num_frames(4800), pretrain.Objective(num_negatives=7))
    batch = dict(input_values=audio, attention_mask=mask, **sampled)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def grads(p, r, mult):  # one compiled program for both scales
        def f(p):
            m = nnx.merge(graphdef, p, r, copy=True)
            objective = pretrain.Objective(num_negatives=7, feature_grad_mult=mult)
            loss_sum, count, metrics = pretrain.loss_fn(m, batch, 1000, objective)
            return loss_sum / count, metrics
        return jax.grad(f, has_aux=True)(p)

    full, metrics = grads(params, rest, jnp.float32(1.0))
    scaled, _ = grads(params, rest, jnp.float32(0.1))
    assert np.isfinite(float(metrics["loss"]))
    assert float(metrics["temperature"]) == pytest.approx(2 * 0.999995 ** 1000, rel=1e-6)
    cnn = full["wav2vec2"]["feature_extractor"]["conv_layers"][0]["kernel"][...]
    np.testing.assert_allclose(scaled["wav2vec2"]["feature_extractor"]["conv_layers"][0]["kernel"][...],
                               0.1 * cnn, rtol=1e-4, atol=1e-7)
    # the quantizer and both projections learn (straight-through reaches weight_proj)
    for path in (("quantizer", "weight_proj", "kernel"), ("quantizer", "codevectors"),
                 ("project_q", "kernel"), ("project_hid", "kernel")):
        g = full
        for name in path:
            g = g[name]
        assert float(jnp.abs(g[...]).max()) > 0, path
    np.testing.assert_allclose(  # the rest of the model is untouched by the scale
        scaled["project_hid"]["kernel"][...], full["project_hid"]["kernel"][...], rtol=1e-5, atol=1e-7)


def test_mask_of_the_wrong_shape_is_refused():
    config = Wav2Vec2Config.from_hf(tiny_hf_config("layer").to_dict(), num_hidden_layers=1)
    model = Wav2Vec2ForPreTraining(config, PretrainingConfig(**TINY_PRETRAINING), rngs=nnx.Rngs(0))
    audio = np.zeros((2, 3200), np.float32)
    with pytest.raises(ValueError, match=r"mask_time_indices shape \(2, 5\) must be \(batch, frames\) = \(2, 9\)"):
        jax.eval_shape(lambda a, m: model(a, None, m), audio, np.zeros((2, 5), bool))


def test_objective_refuses_bad_values():
    from w2v_jax.models import ConfigError

    with pytest.raises(ConfigError, match="Objective.num_negatives=0"):
        pretrain.Objective(num_negatives=0)
    with pytest.raises(ConfigError, match="Objective.min_temperature=3.0"):
        pretrain.Objective(min_temperature=3.0)
