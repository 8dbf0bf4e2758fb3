"""The analytic FLOP counter against XLA's cost analysis of the same programs.

XLA counts every operation; the counter only convolutions and matmuls. ReLU activations
keep the uncounted elementwise work small (XLA prices erf's polynomial high), and the
layers are unrolled: XLA's cost analysis counts a while loop's body once, so a scanned
stack would be undercounted by XLA, not by us. XLA skips a convolution's taps that fall
in the padding; the counter counts them as the device computes them (the positional
conv's 16 padded taps at each end of these 99-frame utterances are about 0.7 % here).
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from w2v_jax import flops
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.models.encoder import Attention

SAMPLES, BATCH = 32000, 2
CONFIG = Wav2Vec2Config.preset(
    "base", hidden_size=256, intermediate_size=1024, num_attention_heads=4, conv_dim=(256,) * 7,
    num_conv_pos_embeddings=32, num_hidden_layers=2, hidden_act="relu",
    feat_extract_activation="relu", scan_layers=False, layerdrop=0.0)


def xla_flops(fn, *args) -> float:
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


@pytest.fixture(scope="module")
def model_split():
    model = Wav2Vec2Model(CONFIG, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cnn, other = nnx.split_state(params, lambda path, _: "feature_extractor" in path, ...)
    audio = jax.random.normal(jax.random.key(0), (BATCH, SAMPLES))
    mask = jnp.ones((BATCH, SAMPLES), jnp.int32)

    def loss(other, cnn):
        out = nnx.merge(graphdef, nnx.merge_state(other, cnn), rest)(
            audio, mask, output_hidden_states=False)
        return jnp.sum(out.last_hidden_state ** 2)

    return loss, other, cnn


def test_forward_count_matches_xla(model_split):
    loss, other, cnn = model_split
    ours = BATCH * sum(flops.forward_flops(CONFIG, SAMPLES).values())
    assert xla_flops(loss, other, cnn) == pytest.approx(ours, rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("freeze_cnn", [True, False])
def test_step_count_matches_xla(model_split, freeze_cnn):
    """Backward: twice the forward of each trained matmul; a frozen CNN runs forward only."""
    loss, other, cnn = model_split
    grad = jax.grad(loss, argnums=0 if freeze_cnn else (0, 1))
    ours = flops.fine_tune_step_flops(CONFIG, SAMPLES, BATCH, freeze_feature_encoder=freeze_cnn)
    assert xla_flops(grad, other, cnn) == pytest.approx(ours, rel=0.02)


def test_attention_core_is_counted():
    """Long utterances, where QK^T and PV are 40 % of the attention's FLOPs."""
    frames = 400
    attention = Attention(CONFIG, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(attention)
    x = jnp.ones((BATCH, frames, CONFIG.hidden_size))
    lengths = jnp.full((BATCH,), frames, jnp.int32)
    run = lambda p, x: nnx.merge(graphdef, p)(x, lengths, None, True)
    samples = (frames - 1) * CONFIG.frame_stride + CONFIG.receptive_field
    parts = flops.forward_flops(CONFIG.replace(num_hidden_layers=1), samples)
    ours = BATCH * (parts["attention_projections"] + parts["attention_core"])
    assert xla_flops(run, params, x) == pytest.approx(ours, rel=0.02)


def test_pretraining_adds_the_quantizer_and_trains_the_cnn():
    """Worked by hand for large-lv60 on one 15 s utterance (749 frames)."""
    large = Wav2Vec2Config.preset("large-lv60")
    samples = 15 * 16000
    assert large.num_frames(samples) == 749
    extra = flops.pretrain_forward_flops(large, samples)
    assert extra["quantizer_logits"] == 2 * 749 * 512 * 640
    assert extra["contrastive_logits"] == 2 * 749 * 101 * 768
    convs = flops.conv_flops(large, samples)
    assert convs[0] == 2 * 47999 * 10 * 1 * 512  # (240000 - 10) // 5 + 1 outputs
    fine_tune = flops.fine_tune_step_flops(large, samples, 1, freeze_feature_encoder=False)
    assert flops.pretrain_step_flops(large, samples, 1) == pytest.approx(
        fine_tune + 3 * sum(extra.values()))
