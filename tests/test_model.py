"""Model behaviour beyond parity: frame math, SpecAugment, LayerDrop, dropout, bad input, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from tests.tiny_hf import tiny_hf_config
from w2v_jax import sharding
from w2v_jax.hf import load_pretrained
from w2v_jax.models import ConfigError, Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.models.layers import grouped_conv1d
from w2v_jax.models.spec_augment import span_mask

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, apply_spec_augment=False)


def tiny_model(seed=0, **overrides):
    return Wav2Vec2Model(Wav2Vec2Config.preset("tiny", **overrides), rngs=nnx.Rngs(seed))


def test_frame_counts_match_transformers():
    lengths = np.arange(400, 20000, 37)
    reference = transformers.Wav2Vec2Model(tiny_hf_config("group"))._get_feat_extract_output_lengths(
        torch.from_numpy(lengths)).numpy()
    config = Wav2Vec2Config.preset("large-lv60")
    np.testing.assert_array_equal(config.num_frames(lengths), reference)
    assert (config.frame_stride, config.receptive_field) == (320, 400)
    # Frame i is centred at (320 i + 200) / 16000 s (DESIGN.md), worked by hand for i = 0, 1, 10.
    np.testing.assert_allclose(config.frame_center_seconds([0, 1, 10]), [0.0125, 0.0325, 0.2125])


def test_geometry_follows_the_conv_config():
    config = Wav2Vec2Config.preset("tiny", conv_kernel=(10, 3, 3, 3, 3, 3, 2),
                                   conv_stride=(5, 2, 2, 2, 2, 2, 1))
    # 1 + 9 + 2*5 + 2*10 + 2*20 + 2*40 + 2*80 + 1*160 = 480 samples; stride 5*2^5 = 160.
    assert (config.frame_stride, config.receptive_field) == (160, 480)


@pytest.mark.parametrize("make_input,message", [
    (lambda: jnp.zeros((2, 1, 4000)), "shape"),
    (lambda: jnp.zeros((2, 4000), jnp.int16), "dtype"),
    (lambda: jnp.zeros((2, 300)), "at least 400"),
])
def test_bad_audio_fails_before_compiling(make_input, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda x: model(x))(make_input())


def test_mask_shape_must_match_audio():
    with pytest.raises(ValueError, match="attention_mask shape"):
        tiny_model()(jnp.zeros((2, 4000)), jnp.ones((2, 3999)))


@pytest.mark.parametrize("field,value", [("feat_extract_norm", "batch"), ("layerdrop", 1.5),
                                         ("num_attention_heads", 5), ("dtype", "float16")])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        Wav2Vec2Config.preset("tiny", **{field: value})


def test_spec_augment_spans_follow_transformers_statistics():
    lengths = np.array([200, 150, 60, 25])
    prob, span, min_masks, draws = 0.3, 10, 2, 300
    draw = jax.jit(lambda key: span_mask(key, jnp.asarray(lengths), 200, prob, span, min_masks))
    ours = np.stack([np.asarray(draw(k)) for k in jax.random.split(jax.random.key(0), draws)])
    np.random.seed(0)
    attention = (np.arange(200)[None] < lengths[:, None]).astype(np.int64)
    theirs = np.stack([_compute_mask_indices((4, 200), prob, span, torch.from_numpy(attention), min_masks)
                       for _ in range(draws)])
    assert not ours[:, np.arange(200)[None] >= lengths[:, None]].any()  # never past an example's end
    assert (ours.sum(-1) >= span).all()  # min_masks >= 1: at least one whole span in every example
    # Mean masked fraction per example agrees with transformers' numpy sampler.
    np.testing.assert_allclose(ours.mean((0, 2)), theirs.mean((0, 2)), atol=0.02)


def _forward_with_rng(model, audio, deterministic):
    """One jitted function of (params+rng state, audio); counts its traces."""
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def forward(state, audio):
        traces.append(1)
        model = nnx.merge(graphdef, state)
        out = model(audio, deterministic=deterministic)
        return out.hidden_states, nnx.state(model)

    def call(audio):
        nonlocal state
        hidden, state = forward(state, audio)
        return hidden
    return call, traces


@pytest.mark.slow
def test_layerdrop_skips_layers_without_recompiling():
    audio = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8000)), jnp.float32)
    # hidden_states[-1] before the final LayerNorm, so a skipped stack's outputs are its input
    call, traces = _forward_with_rng(
        tiny_model(layerdrop=1.0, final_norm_in_hidden_states=False, **NO_DROPOUT), audio, False)
    hidden = call(audio)
    for h in hidden[1:]:  # every layer dropped: the stack passes its input through
        np.testing.assert_array_equal(h, hidden[0])

    call, traces = _forward_with_rng(
        tiny_model(layerdrop=0.5, final_norm_in_hidden_states=False, **NO_DROPOUT), audio, False)
    patterns = {tuple(bool(np.array_equal(a, b)) for a, b in zip(h[1:], h[:-1]))
                for h in (call(audio) for _ in range(12))}
    assert len(patterns) > 1 and len(traces) == 1


@pytest.mark.slow
def test_dropout_draws_fresh_masks_and_is_off_when_deterministic():
    audio = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8000)), jnp.float32)
    model = tiny_model(layerdrop=0.0)
    call, _ = _forward_with_rng(model, audio, False)
    first, second = call(audio)[-1], call(audio)[-1]
    assert not np.allclose(first, second)
    clean_forward = jax.jit(lambda x: model(x).hidden_states[-1])
    clean = clean_forward(audio)
    np.testing.assert_array_equal(clean, clean_forward(audio))
    assert not np.allclose(first, clean)


@pytest.mark.slow
def test_forward_sharded_over_data_and_fsdp_equals_one_device(hf_checkpoints):
    assert jax.device_count() == 8
    rng = np.random.default_rng(2)
    lengths = rng.integers(3000, 9600, size=8)
    mask = (np.arange(9600)[None] < lengths[:, None]).astype(np.int32)
    audio = (rng.normal(size=mask.shape) * mask).astype(np.float32)
    model = load_pretrained(hf_checkpoints["group"])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def forward(params, audio, mask):
        return nnx.merge(graphdef, params, rest)(audio, mask).hidden_states

    single = jax.jit(forward)(params, audio, mask)
    mesh = sharding.make_mesh(data=4, fsdp=2)
    param_shardings = sharding.state_shardings(params, mesh)
    batch = sharding.batch_sharding(mesh)
    sharded_params = jax.device_put(params, param_shardings)
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
               for x in jax.tree.leaves(sharded_params))
    sharded = jax.jit(forward, in_shardings=(param_shardings, batch, batch), out_shardings=batch)(
        sharded_params, jax.device_put(audio, batch), jax.device_put(mask, batch))
    for a, b in zip(single, sharded):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width,groups", [(5, 1), (8, 4), (16, 2)])
def test_grouped_conv_gradients_match_torch(width, groups):
    """The hand-written VJP of the positional conv against torch.autograd (odd and even kernels)."""
    rng = np.random.default_rng(width)
    x = rng.normal(size=(2, 23, 12)).astype(np.float32)
    kernel = rng.normal(size=(width, 12 // groups, 12)).astype(np.float32)
    dy = rng.normal(size=(2, 23, 12)).astype(np.float32)
    padding = (width // 2, width // 2 - (1 - width % 2))

    y, vjp = jax.vjp(lambda a, k: grouped_conv1d(a, k, padding, groups), x, kernel)
    dx, dkernel = vjp(jnp.asarray(dy))

    tx = torch.tensor(x.transpose(0, 2, 1), requires_grad=True)
    tk = torch.tensor(kernel.transpose(2, 1, 0), requires_grad=True)
    ty = torch.nn.functional.conv1d(tx, tk, padding=width // 2, groups=groups)
    ty = ty[..., :-1] if width % 2 == 0 else ty  # transformers' SamePadLayer
    ty.backward(torch.from_numpy(dy.transpose(0, 2, 1)))
    np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 1), atol=1e-4)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 1), atol=1e-4)
    np.testing.assert_allclose(dkernel, tk.grad.numpy().transpose(2, 1, 0), atol=1e-4)


@pytest.mark.slow
def test_attention_with_dropout_path_masks_padding_like_the_fused_one():
    """Training with attention dropout writes the attention out (dot_product_attention has no
    dropout); at a vanishing rate it must equal the fused path, padded keys masked alike."""
    from w2v_jax.models.encoder import Attention

    config = Wav2Vec2Config.preset("tiny", attention_dropout=1e-9)
    attention = Attention(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 11, config.hidden_size)), jnp.float32)
    lengths = jnp.array([11, 7, 1], jnp.int32)
    fused = attention(x, lengths, None, True)
    written_out = attention(x, lengths, jax.random.key(0), False)
    np.testing.assert_allclose(written_out, fused, atol=1e-6)
    # padded keys carry no weight: changing them changes no output
    x_changed = x.at[1, 7:].set(100.0).at[2, 1:].set(-100.0)
    for deterministic, key in ((True, None), (False, jax.random.key(0))):
        out = attention(x_changed, lengths, key, deterministic)
        np.testing.assert_allclose(out[1, :7], fused[1, :7], atol=1e-5)
        np.testing.assert_allclose(out[2, :1], fused[2, :1], atol=1e-5)
