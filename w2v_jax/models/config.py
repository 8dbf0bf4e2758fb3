"""wav2vec 2.0 configuration: HF-compatible fields plus our compute switches."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from w2v_jax.errors import UserError

_NORMS = ("group", "layer")
_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
_DTYPES = ("float32", "bfloat16")
# What a rematerialised layer keeps for the backward pass (jax.checkpoint policies).
# "save_dots": the outputs of its weight matmuls (q/k/v/out, feed-forward), about 9 x D
# values a frame per layer, so the backward recomputes only norms, activations and the
# attention core; "save_nothing": only the layer's input, the whole layer recomputed.
REMAT_POLICIES = ("save_dots", "save_nothing")
# HF config.json fields that describe the backbone and that we implement.
_HF_BACKBONE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout", "activation_dropout", "attention_dropout",
    "feat_proj_dropout", "layerdrop", "layer_norm_eps", "feat_extract_norm",
    "feat_extract_activation", "conv_dim", "conv_stride", "conv_kernel", "conv_bias",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm",
    "apply_spec_augment", "mask_time_prob", "mask_time_length", "mask_time_min_masks",
    "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks",
)
_SUPPORTED_ARCHITECTURES = (
    "Wav2Vec2Model", "Wav2Vec2ForPreTraining", "Wav2Vec2ForCTC",
    "Wav2Vec2ForSequenceClassification", "Wav2Vec2ForAudioFrameClassification",
    "Wav2Vec2ForXVector",
)


class ConfigError(UserError, ValueError):
    """A configuration value we cannot honour; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """Architecture (HF field names) and compute policy of a wav2vec 2.0 backbone."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.0
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    layerdrop: float = 0.1
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # Compute policy (not in HF configs). Parameters are always float32.
    dtype: str = "float32"
    scan_layers: bool = True  # measured faster than unrolled slices of the stack on CPU (BUILD_NOTES)
    remat: bool = False
    remat_policy: str = "save_dots"
    # Pre-LN ("stable") models only: is hidden_states[-1] the last layer's output after the
    # encoder's final LayerNorm (transformers 4.x, fairseq's returned features, the paper's
    # era) or before it (transformers 5)? The paper's by default; parity tests against the
    # pinned transformers 5 set False.
    final_norm_in_hidden_states: bool = True

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        def fail(field, why):
            raise ConfigError(f"Wav2Vec2Config.{field}={getattr(self, field)!r}: {why}")

        if self.feat_extract_norm not in _NORMS:
            fail("feat_extract_norm", f"must be one of {_NORMS}")
        for field in ("hidden_act", "feat_extract_activation"):
            if getattr(self, field) not in _ACTIVATIONS:
                fail(field, f"must be one of {_ACTIVATIONS}")
        if self.dtype not in _DTYPES:
            fail("dtype", f"must be one of {_DTYPES}")
        if self.remat_policy not in REMAT_POLICIES:
            fail("remat_policy", f"must be one of {REMAT_POLICIES}")
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            fail("conv_dim", "conv_dim, conv_stride and conv_kernel must have the same length")
        for field in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "num_conv_pos_embeddings",
                      "num_conv_pos_embedding_groups", "mask_time_length",
                      "mask_feature_length"):
            if int(getattr(self, field)) < 1:
                fail(field, "must be a positive integer")
        if min(self.conv_dim + self.conv_stride + self.conv_kernel) < 1:
            fail("conv_kernel", "conv dims, strides and kernels must be positive")
        if self.hidden_size % self.num_attention_heads:
            fail("num_attention_heads", f"must divide hidden_size={self.hidden_size}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            fail("num_conv_pos_embedding_groups", f"must divide hidden_size={self.hidden_size}")
        for field in ("hidden_dropout", "activation_dropout", "attention_dropout",
                      "feat_proj_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob"):
            if not 0.0 <= float(getattr(self, field)) <= 1.0:
                fail(field, "must be a probability in [0, 1]")
        for field in ("mask_time_min_masks", "mask_feature_min_masks"):
            if int(getattr(self, field)) < 0:
                fail(field, "must be >= 0")

    # ------------------------------------------------------------- frame math
    @property
    def frame_stride(self) -> int:
        """Samples between consecutive frames (320 for every released model)."""
        return int(np.prod(self.conv_stride))

    @property
    def receptive_field(self) -> int:
        """Samples that one frame sees (400 for every released model)."""
        field = 1
        for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            field = (field - 1) * stride + kernel
        return field

    def num_frames(self, num_samples):
        """Frames the feature encoder emits for `num_samples` (int or int array)."""
        length = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            length = (length - kernel) // stride + 1
        return length

    def frame_center_seconds(self, frame_index, sample_rate: int = 16000):
        """Centre of frame i in seconds: (stride * i + receptive_field / 2) / rate."""
        return (self.frame_stride * np.asarray(frame_index) + self.receptive_field / 2) / sample_rate

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> "Wav2Vec2Config":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown Wav2Vec2Config field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Wav2Vec2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown Wav2Vec2Config field(s): {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_hf(cls, config: dict[str, Any] | str | os.PathLike, **overrides: Any) -> "Wav2Vec2Config":
        """From a transformers config: a dict, a config.json path or a checkpoint dir."""
        source = "<dict>"
        if not isinstance(config, dict):
            source = os.fspath(config)
            if os.path.isdir(source):
                source = os.path.join(source, "config.json")
            with open(source) as f:
                config = json.load(f)

        def fail(field, why):
            raise ConfigError(f"{source}: {field}={config.get(field)!r}: {why}")

        model_type = config.get("model_type", "wav2vec2")
        if model_type != "wav2vec2":
            fail("model_type", "only wav2vec2 checkpoints are supported")
        for arch in config.get("architectures") or ():
            if arch not in _SUPPORTED_ARCHITECTURES:
                fail("architectures", f"unknown architecture {arch!r}; expected one of "
                     f"{_SUPPORTED_ARCHITECTURES}")
        if config.get("add_adapter"):
            fail("add_adapter", "adapter layers are not supported")
        if config.get("feat_extract_norm", "group") not in _NORMS:
            fail("feat_extract_norm", f"must be one of {_NORMS}")
        for field in ("hidden_act", "feat_extract_activation"):
            if config.get(field, "gelu") not in _ACTIVATIONS:
                fail(field, f"must be one of {_ACTIVATIONS}")
        values = {k: config[k] for k in _HF_BACKBONE_FIELDS if k in config}
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """A transformers Wav2Vec2Config dict for this architecture."""
        values = {k: getattr(self, k) for k in _HF_BACKBONE_FIELDS}
        values.update(model_type="wav2vec2", architectures=["Wav2Vec2Model"],
                      conv_dim=list(self.conv_dim), conv_stride=list(self.conv_stride),
                      conv_kernel=list(self.conv_kernel))
        return values

    # --------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Wav2Vec2Config":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


# Architectures of the released checkpoints (facebook/wav2vec2-base, -large,
# -large-lv60, -large-xlsr-53) and a tiny one with the same frame geometry.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                 do_stable_layer_norm=True, conv_bias=True),
    "base": dict(),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096),
    "large-lv60": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096, feat_extract_norm="layer",
                       do_stable_layer_norm=True, conv_bias=True),
}
