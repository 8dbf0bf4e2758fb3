"""The CNN feature encoder (7 strided convolutions) and the feature projection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from w2v_jax.models.config import Wav2Vec2Config
from w2v_jax.models.layers import activation, conv1d, dropout
from w2v_jax.sharding import axes


class ConvLayer(nnx.Module):
    """Conv1d -> optional norm -> activation, as HF's Wav2Vec2*ConvLayer."""

    def __init__(self, config: Wav2Vec2Config, index: int, *, rngs: nnx.Rngs):
        in_dim = config.conv_dim[index - 1] if index > 0 else 1
        out_dim = config.conv_dim[index]
        kernel_size = config.conv_kernel[index]
        self.kernel_size = kernel_size
        self.stride = config.conv_stride[index]
        self.dtype = jnp.dtype(config.dtype)
        self.act = config.feat_extract_activation
        # Kaiming-normal, as HF initialises these convs.
        init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, in_dim, out_dim)),
                                **axes("conv_width", "conv_in", "conv_out"))
        self.bias = nnx.Param(jnp.zeros((out_dim,)), **axes("conv_out")) if config.conv_bias else None
        norm_axes = dict(scale_metadata=axes("conv_out"), bias_metadata=axes("conv_out"))
        if config.feat_extract_norm == "layer":
            self.norm = nnx.LayerNorm(out_dim, epsilon=1e-5, use_fast_variance=False,
                                      dtype=self.dtype, rngs=rngs, **norm_axes)
        elif index == 0:
            # One group per channel: each channel is normalised over time.
            self.norm = nnx.GroupNorm(out_dim, num_groups=out_dim, epsilon=1e-5,
                                      use_fast_variance=False, dtype=self.dtype, rngs=rngs,
                                      **norm_axes)
        else:
            self.norm = None

    def output_length(self, length: jax.Array) -> jax.Array:
        return (length - self.kernel_size) // self.stride + 1

    def __call__(self, x: jax.Array, length: jax.Array | None = None) -> jax.Array:
        """x (B, S, C_in) -> (B, T, C_out); `length` (B,) counts each row's real input steps."""
        x = conv1d(x, self.kernel[...].astype(self.dtype), stride=self.stride)
        if self.bias is not None:
            x = x + self.bias[...].astype(self.dtype)
        if isinstance(self.norm, nnx.GroupNorm) and length is not None:
            # Statistics over each row's real frames only, so a padded utterance is normalised
            # exactly as it is alone (HF's group norm also counts the padding). A row with no
            # real frame keeps the plain statistics rather than dividing by zero.
            frames = self.output_length(length)
            real = jnp.arange(x.shape[1])[None, :] < jnp.maximum(frames, 0)[:, None]
            real = real | (frames <= 0)[:, None]
            x = self.norm(x, mask=jnp.broadcast_to(real[:, :, None], x.shape))
        elif self.norm is not None:
            x = self.norm(x)
        return activation(self.act)(x)


class FeatureEncoder(nnx.Module):
    """Raw 16 kHz samples (B, S) -> CNN features (B, T, conv_dim[-1])."""

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        self.conv_layers = nnx.List(
            [ConvLayer(config, i, rngs=rngs) for i in range(len(config.conv_dim))])

    def __call__(self, input_values: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        x = input_values[:, :, None]
        length = None if attention_mask is None else jnp.sum(attention_mask.astype(jnp.int32), -1)
        for layer in self.conv_layers:
            x = layer(x, length)
            length = None if length is None else layer.output_length(length)
        return x


class FeatureProjection(nnx.Module):
    """LayerNorm -> Dense -> dropout; also returns the normed features (HF's extract_features)."""

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        self.layer_norm = nnx.LayerNorm(config.conv_dim[-1], epsilon=config.layer_norm_eps,
                                        use_fast_variance=False, dtype=dtype, rngs=rngs,
                                        scale_metadata=axes("conv_out"),
                                        bias_metadata=axes("conv_out"))
        self.projection = nnx.Linear(config.conv_dim[-1], config.hidden_size, dtype=dtype,
                                     kernel_init=jax.nn.initializers.normal(0.02), rngs=rngs,
                                     kernel_metadata=axes("conv_features", "embed"),
                                     bias_metadata=axes("embed"))
        self.rate = config.feat_proj_dropout

    def __call__(self, features, key, deterministic):
        normed = self.layer_norm(features)
        hidden = dropout(self.projection(normed), self.rate, key, deterministic)
        return hidden, normed
