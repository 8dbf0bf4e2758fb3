"""Transformer encoder: positional convolution and layers in post-LN or pre-LN ("stable") order.

The layers' parameters are stored stacked (leading axis = layer) whatever the compute
switches, so checkpoints and the HF mapping do not depend on `scan_layers` or `remat`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from w2v_jax.models.config import Wav2Vec2Config
from w2v_jax.sharding import axes
from w2v_jax.models.layers import activation, dropout, grouped_conv1d, split_key

_NORMAL = jax.nn.initializers.normal(0.02)
_REMAT_POLICIES = {"save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                   "save_nothing": jax.checkpoint_policies.nothing_saveable}


class PositionalConvEmbedding(nnx.Module):
    """Grouped conv with weight norm over the kernel axis (torch weight_norm(dim=2)), then GELU."""

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        kernel_size = config.num_conv_pos_embeddings
        self.groups = config.num_conv_pos_embedding_groups
        dim = config.hidden_size
        std = 2.0 * (1.0 / (kernel_size * dim)) ** 0.5
        v = std * jax.random.normal(rngs.params(), (kernel_size, dim // self.groups, dim))
        self.weight_v = nnx.Param(v, **axes("conv_width", "conv_in", "embed"))
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(v * v, axis=(1, 2))), **axes("conv_width"))
        self.bias = nnx.Param(jnp.zeros((dim,)), **axes("embed"))
        self.dtype = jnp.dtype(config.dtype)
        self.act = config.feat_extract_activation

    def kernel(self) -> jax.Array:
        v = self.weight_v[...]
        norm = jnp.sqrt(jnp.sum(v * v, axis=(1, 2), keepdims=True))
        return self.weight_g[...][:, None, None] * v / norm

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = self.weight_v.shape[0]
        # PyTorch pads kernel_size // 2 each side; HF's SamePadLayer then drops the one frame
        # too many an even kernel yields, which is the same as padding one less on the right.
        padding = (kernel_size // 2, kernel_size // 2 - (1 - kernel_size % 2))
        y = grouped_conv1d(x, self.kernel().astype(self.dtype), padding, self.groups)
        return activation(self.act)(y + self.bias[...].astype(self.dtype))


class Attention(nnx.Module):
    """Multi-head self-attention over the real frames of each row (keys past a row's length
    are masked). Logits and softmax in float32 whatever the compute dtype.

    Without attention dropout (inference, or a rate of 0) it is `jax.nn.dot_product_attention`:
    cuDNN's fused flash attention on a GPU in bfloat16, XLA elsewhere. That API has no
    dropout on the probabilities, so training with attention dropout writes the same
    computation out with the dropout in the middle.
    """

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        dim, dtype = config.hidden_size, jnp.dtype(config.dtype)
        dense = functools.partial(nnx.Linear, dim, dim, dtype=dtype, kernel_init=_NORMAL, rngs=rngs)
        into_heads = dict(kernel_metadata=axes("embed", "heads"), bias_metadata=axes("heads"))
        self.q_proj, self.k_proj, self.v_proj = dense(**into_heads), dense(**into_heads), dense(**into_heads)
        self.out_proj = dense(kernel_metadata=axes("heads", "embed"), bias_metadata=axes("embed"))
        self.num_heads = config.num_attention_heads
        self.rate = config.attention_dropout
        self.dtype = dtype

    def __call__(self, x, lengths, key, deterministic):
        """x (B, T, D), lengths (B,) int32: the real frames of each row, a prefix."""
        batch, length, dim = x.shape
        heads = lambda t: t.reshape(batch, length, self.num_heads, dim // self.num_heads)
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if deterministic or self.rate == 0.0:
            out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                               implementation=_attention_implementation(self.dtype))
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
            logits = logits * (dim // self.num_heads) ** -0.5
            real_key = jnp.arange(length)[None, :] < lengths[:, None]
            logits = jnp.where(real_key[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
            probs = dropout(jax.nn.softmax(logits, axis=-1), self.rate, key, deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
        return self.out_proj(out.reshape(batch, length, dim))


def _attention_implementation(dtype) -> str:
    """cuDNN's flash attention where it exists (a GPU, 16-bit operands), XLA otherwise."""
    if jax.default_backend() == "gpu" and dtype in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla"


class FeedForward(nnx.Module):
    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        self.intermediate_dense = nnx.Linear(config.hidden_size, config.intermediate_size,
                                             dtype=dtype, kernel_init=_NORMAL, rngs=rngs,
                                             kernel_metadata=axes("embed", "mlp"),
                                             bias_metadata=axes("mlp"))
        self.output_dense = nnx.Linear(config.intermediate_size, config.hidden_size,
                                       dtype=dtype, kernel_init=_NORMAL, rngs=rngs,
                                       kernel_metadata=axes("mlp", "embed"),
                                       bias_metadata=axes("embed"))
        self.act = config.hidden_act
        self.activation_rate = config.activation_dropout
        self.hidden_rate = config.hidden_dropout

    def __call__(self, x, key, deterministic):
        k1, k2 = split_key(key, 2)
        x = activation(self.act)(self.intermediate_dense(x))
        x = dropout(x, self.activation_rate, k1, deterministic)
        return dropout(self.output_dense(x), self.hidden_rate, k2, deterministic)


class EncoderLayer(nnx.Module):
    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        norm = functools.partial(nnx.LayerNorm, config.hidden_size, epsilon=config.layer_norm_eps,
                                 use_fast_variance=False, dtype=dtype, rngs=rngs,
                                 scale_metadata=axes("embed"), bias_metadata=axes("embed"))
        self.attention = Attention(config, rngs=rngs)
        self.layer_norm = norm()
        self.feed_forward = FeedForward(config, rngs=rngs)
        self.final_layer_norm = norm()
        self.pre_norm = config.do_stable_layer_norm
        self.rate = config.hidden_dropout

    def __call__(self, x, lengths, key, deterministic):
        k_attn, k_drop, k_ff = split_key(key, 3)
        if self.pre_norm:
            attn = self.attention(self.layer_norm(x), lengths, k_attn, deterministic)
            x = x + dropout(attn, self.rate, k_drop, deterministic)
            return x + self.feed_forward(self.final_layer_norm(x), k_ff, deterministic)
        attn = self.attention(x, lengths, k_attn, deterministic)
        x = self.layer_norm(x + dropout(attn, self.rate, k_drop, deterministic))
        return self.final_layer_norm(x + self.feed_forward(x, k_ff, deterministic))


def _stacked_layers(config: Wav2Vec2Config, rngs: nnx.Rngs) -> EncoderLayer:
    """One EncoderLayer whose every parameter has a leading axis of num_hidden_layers."""
    graphdef, *states = zip(*(nnx.split(EncoderLayer(config, rngs=rngs))
                              for _ in range(config.num_hidden_layers)))
    return nnx.merge(graphdef[0], jax.tree.map(lambda *xs: jnp.stack(xs), *states[0]))


class Encoder(nnx.Module):
    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.pos_conv_embed = PositionalConvEmbedding(config, rngs=rngs)
        self.layer_norm = nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps,
                                        use_fast_variance=False, dtype=jnp.dtype(config.dtype),
                                        rngs=rngs, scale_metadata=axes("embed"),
                                        bias_metadata=axes("embed"))
        self.layers = _stacked_layers(config, rngs)

    def __call__(self, x, frame_mask, key, deterministic, output_hidden_states=True):
        """x (B, T, D), frame_mask (B, T) bool, True on a prefix of each row (the real frames)
        -> (last_hidden_state, hidden_states)."""
        cfg = self.config
        k_drop, k_layers, k_skip = split_key(key, 3)
        x = jnp.where(frame_mask[:, :, None], x, 0)  # padded frames must not leak through the conv
        lengths = jnp.sum(frame_mask, axis=-1, dtype=jnp.int32)
        x = x + self.pos_conv_embed(x)
        if not cfg.do_stable_layer_norm:
            x = self.layer_norm(x)
        x = dropout(x, cfg.hidden_dropout, k_drop, deterministic)

        num_layers = cfg.num_hidden_layers
        layer_keys = (jax.random.split(k_layers, num_layers) if k_layers is not None
                      else jnp.zeros((num_layers, 2), jnp.uint32))
        use_layerdrop = not deterministic and cfg.layerdrop > 0.0
        skips = (jax.random.uniform(k_skip, (num_layers,)) < cfg.layerdrop if use_layerdrop
                 else jnp.zeros((num_layers,), bool))
        graphdef, params = nnx.split(self.layers)

        def layer_step(h, inputs):
            layer_params, layer_key, skip = inputs
            layer = nnx.merge(graphdef, layer_params)
            run = lambda h: layer(h, lengths, None if deterministic else layer_key, deterministic)
            if use_layerdrop:  # a traced decision: one compiled program for every draw
                out = jax.lax.cond(skip, lambda h: h, run, h)
            else:
                out = run(h)
            return out, (h if output_hidden_states else None)

        if cfg.remat:
            layer_step = jax.checkpoint(layer_step, prevent_cse=not cfg.scan_layers,
                                        policy=_REMAT_POLICIES[cfg.remat_policy])
        if cfg.scan_layers:
            x, inputs = jax.lax.scan(layer_step, x, (params, layer_keys, skips))
            layer_inputs = tuple(inputs[i] for i in range(num_layers)) if output_hidden_states else ()
        else:
            # One split of the stack, not a slice per layer: the gradient of a split is
            # one concatenate, while per-layer slices pad and add a whole stack each.
            pieces = jax.tree.map(lambda p: [q[0] for q in jnp.split(p, num_layers)],
                                  (params, layer_keys, skips))
            layer_inputs = []
            for i in range(num_layers):
                x, h = layer_step(x, jax.tree.map(lambda q: q[i], pieces,
                                                  is_leaf=lambda q: isinstance(q, list)))
                layer_inputs.append(h)
        if cfg.do_stable_layer_norm:
            # Pre-LN: the last layer's output before or after the final LayerNorm
            # (transformers 5 vs transformers 4 / the paper; config.final_norm_in_hidden_states).
            before_norm, x = x, self.layer_norm(x)
            last = x if cfg.final_norm_in_hidden_states else before_norm
        else:
            last = x
        hidden_states = (*layer_inputs, last) if output_hidden_states else ()
        return x, hidden_states
