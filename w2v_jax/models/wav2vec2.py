"""wav2vec 2.0 (transformers' Wav2Vec2Model) as an NNX module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from w2v_jax.models.config import Wav2Vec2Config
from w2v_jax.models.encoder import Encoder
from w2v_jax.models.feature_encoder import FeatureEncoder, FeatureProjection
from w2v_jax.models.layers import split_key
from w2v_jax.models.spec_augment import apply_spec_augment
from w2v_jax.sharding import axes


@struct.dataclass
class Wav2Vec2Output:
    """Outputs with transformers' semantics (output_hidden_states=True)."""

    last_hidden_state: jax.Array  # (B, T, D)
    hidden_states: tuple[jax.Array, ...]  # num_hidden_layers + 1 arrays (B, T, D)
    extract_features: jax.Array  # (B, T, C): the layer-normed CNN output, as HF returns it
    frame_mask: jax.Array  # (B, T) bool: True for frames of real audio
    conv_features: jax.Array | None = None  # (B, T, C): the CNN output before its LayerNorm


class Wav2Vec2Model(nnx.Module):
    """Raw audio (B, S) at 16 kHz -> every hidden state.

    On real frames each row of a padded batch (with its attention_mask) equals the model
    on that utterance alone. That is transformers' semantics too, except for group-norm
    checkpoints (wav2vec2-base, -large), whose first conv's group norm transformers
    computes over the padding as well; here it counts the real samples only.

    Randomness in training (dropout, LayerDrop, SpecAugment) is drawn from the
    module's own `rngs.dropout` stream; `deterministic=True` uses none.
    """

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.feature_extractor = FeatureEncoder(config, rngs=rngs)
        self.feature_projection = FeatureProjection(config, rngs=rngs)
        # Always present (transformers keeps it only while SpecAugment is on), so turning
        # SpecAugment on or off never changes the parameter tree of a checkpoint.
        self.masked_spec_embed = nnx.Param(jax.random.uniform(rngs.params(), (config.hidden_size,)),
                                           **axes("embed"))
        self.encoder = Encoder(config, rngs=rngs)
        self.rngs = rngs

    def frame_mask(self, attention_mask: jax.Array, num_frames: int) -> jax.Array:
        """(B, S) sample mask -> (B, T) frame mask, from the conv kernels and strides."""
        frames = self.config.num_frames(jnp.sum(attention_mask.astype(jnp.int32), axis=-1))
        return jnp.arange(num_frames)[None, :] < frames[:, None]

    def __call__(self, input_values: jax.Array, attention_mask: jax.Array | None = None, *,
                 deterministic: bool = True, output_hidden_states: bool = True,
                 mask_time_indices: jax.Array | None = None,
                 feature_grad_mult: float | jax.Array = 1.0) -> Wav2Vec2Output:
        """`mask_time_indices` (B, T) bool: frames replaced by `masked_spec_embed` (given by the
        pre-training objective; SpecAugment then masks channels only). `feature_grad_mult`
        scales the gradient that reaches the feature encoder (fairseq's feature_grad_mult)."""
        _check_inputs(self.config, input_values, attention_mask)
        key = None if deterministic else self.rngs.dropout()
        k_proj, k_mask, k_encoder = split_key(key, 3)
        dtype = jnp.dtype(self.config.dtype)

        features = self.feature_extractor(input_values.astype(dtype), attention_mask)
        if isinstance(feature_grad_mult, jax.Array) or feature_grad_mult != 1.0:
            features = scale_gradient(features, feature_grad_mult)
        if attention_mask is None:
            frame_mask = jnp.ones(features.shape[:2], bool)
        else:
            frame_mask = self.frame_mask(attention_mask, features.shape[1])
        hidden, extract_features = self.feature_projection(features, k_proj, deterministic)
        config = self.config
        if mask_time_indices is not None:
            if mask_time_indices.shape != frame_mask.shape:
                raise ValueError(f"mask_time_indices shape {tuple(mask_time_indices.shape)} must be "
                                 f"(batch, frames) = {tuple(frame_mask.shape)}")
            hidden = jnp.where(mask_time_indices[:, :, None],
                               self.masked_spec_embed[...].astype(hidden.dtype), hidden)
            config = config.replace(mask_time_prob=0.0)
        if not deterministic and config.apply_spec_augment:
            hidden = apply_spec_augment(k_mask, hidden, frame_mask, self.masked_spec_embed[...], config)
        last, hidden_states = self.encoder(hidden, frame_mask, k_encoder, deterministic,
                                           output_hidden_states)
        return Wav2Vec2Output(last_hidden_state=last, hidden_states=hidden_states,
                              extract_features=extract_features, frame_mask=frame_mask,
                              conv_features=features)


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """x in the forward pass (exactly: x - x is 0), `scale` times its gradient backwards."""
    frozen = jax.lax.stop_gradient(x)
    return frozen + scale * (x - frozen)


def _check_inputs(config: Wav2Vec2Config, input_values, attention_mask) -> None:
    """Shape and dtype errors at trace time, i.e. before anything compiles."""
    if input_values.ndim != 2:
        raise ValueError(f"input_values must be (batch, samples) float audio at 16 kHz; "
                         f"got shape {tuple(input_values.shape)}")
    if not jnp.issubdtype(input_values.dtype, jnp.floating):
        raise ValueError(f"input_values must be floating point audio; got dtype {input_values.dtype} "
                         "(convert int16 PCM with x / 32768)")
    if input_values.shape[1] < config.receptive_field:
        raise ValueError(f"input_values has {input_values.shape[1]} samples; the feature encoder "
                         f"needs at least {config.receptive_field} for one frame")
    if attention_mask is not None and attention_mask.shape != input_values.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal "
                         f"input_values shape {tuple(input_values.shape)}")
