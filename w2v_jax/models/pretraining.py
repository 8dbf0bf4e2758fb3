"""wav2vec 2.0 pre-training model (transformers' Wav2Vec2ForPreTraining) as an NNX module.

The same submodule names as transformers (`wav2vec2`, `quantizer`, `project_hid`,
`project_q`), so conversion maps one parameter to one parameter. The loss lives in
`w2v_jax.pretrain`; this module only computes what the loss compares.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from w2v_jax.models.config import ConfigError, Wav2Vec2Config
from w2v_jax.models.layers import dropout, split_key
from w2v_jax.models.quantizer import GumbelQuantizer
from w2v_jax.models.wav2vec2 import Wav2Vec2Model
from w2v_jax.sharding import axes


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    """The quantizer and projection sizes (transformers' field names and defaults, which are
    fairseq's Base: latent_groups 2, latent_vars 320, final_dim 256).

    Objective hyperparameters (masking, distractors, loss weights, temperatures) are the
    trainer's choice and live in `w2v_jax.pretrain.Objective`.
    """

    num_codevector_groups: int = 2
    num_codevectors_per_group: int = 320
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    feat_quantizer_dropout: float = 0.0  # fairseq's dropout_features (0.1 in its Base recipe)

    def __post_init__(self):
        def fail(field, why):
            raise ConfigError(f"PretrainingConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("num_codevector_groups", "num_codevectors_per_group", "codevector_dim",
                      "proj_codevector_dim"):
            if int(getattr(self, field)) < 1:
                fail(field, "must be a positive integer")
        if self.codevector_dim % self.num_codevector_groups:
            fail("codevector_dim", f"must be divisible by num_codevector_groups="
                 f"{self.num_codevector_groups}")
        if not 0.0 <= self.feat_quantizer_dropout < 1.0:
            fail("feat_quantizer_dropout", "must be a probability in [0, 1)")

    @classmethod
    def from_hf(cls, config: dict[str, Any] | str | os.PathLike) -> "PretrainingConfig":
        """From a transformers config dict, config.json or checkpoint dir (defaults for absent fields)."""
        if not isinstance(config, dict):
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            with open(path) as f:
                config = json.load(f)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    def to_hf(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@struct.dataclass
class PreTrainingOutput:
    projected_states: jax.Array  # (B, T, P): project_hid of the context network's output
    projected_quantized_states: jax.Array  # (B, T, P): project_q of the quantized CNN features
    codes: jax.Array  # (B, T, G) int32 codeword indices
    code_probs: jax.Array  # (B, T, G, V) float32 softmax of the quantizer logits
    conv_features: jax.Array  # (B, T, C) CNN output before its LayerNorm (for the L2 penalty)
    frame_mask: jax.Array  # (B, T) bool: frames of real audio


class Wav2Vec2ForPreTraining(nnx.Module):
    """Backbone + Gumbel quantizer + the two projections of the contrastive task.

    `mask_time_indices` (B, T) bool: frames whose encoder input is replaced by
    `masked_spec_embed` (always applied when given; transformers skips it when the
    config's apply_spec_augment is False, which would make pre-training trivial).
    Randomness (dropout, Gumbel noise) is drawn from the backbone's `rngs.dropout`.
    """

    def __init__(self, config: Wav2Vec2Config, pretraining: PretrainingConfig | None = None, *,
                 rngs: nnx.Rngs):
        pretraining = pretraining or PretrainingConfig()
        self.config, self.pretraining = config, pretraining
        self.wav2vec2 = Wav2Vec2Model(config, rngs=rngs)
        self.quantizer = GumbelQuantizer(
            config.conv_dim[-1], pretraining.num_codevector_groups,
            pretraining.num_codevectors_per_group, pretraining.codevector_dim, rngs=rngs)
        # torch's default Linear init, as transformers resets these two: U(±1/sqrt(fan_in)).
        torch_init = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        self.project_hid = nnx.Linear(config.hidden_size, pretraining.proj_codevector_dim,
                                      kernel_init=torch_init, bias_init=_torch_bias_init(config.hidden_size),
                                      kernel_metadata=axes("embed", "classes"),
                                      bias_metadata=axes("classes"), rngs=rngs)
        self.project_q = nnx.Linear(pretraining.codevector_dim, pretraining.proj_codevector_dim,
                                    kernel_init=torch_init,
                                    bias_init=_torch_bias_init(pretraining.codevector_dim),
                                    kernel_metadata=axes("conv_features", "classes"),
                                    bias_metadata=axes("classes"), rngs=rngs)

    def __call__(self, input_values: jax.Array, attention_mask: jax.Array | None = None,
                 mask_time_indices: jax.Array | None = None, *, deterministic: bool = True,
                 gumbel_temperature: float | jax.Array = 2.0,
                 feature_grad_mult: float | jax.Array = 1.0) -> PreTrainingOutput:
        """`deterministic=True`: no dropout and argmax codewords (transformers' eval mode);
        False: dropout and straight-through Gumbel samples at `gumbel_temperature`.
        `feature_grad_mult` scales the feature encoder's gradient (fairseq's 0.1 for Base)."""
        key = None if deterministic else self.wav2vec2.rngs.dropout()
        k_dropout, k_gumbel = split_key(key, 2)
        out = self.wav2vec2(input_values, attention_mask, deterministic=deterministic,
                            output_hidden_states=False, mask_time_indices=mask_time_indices,
                            feature_grad_mult=feature_grad_mult)
        features = dropout(out.extract_features, self.pretraining.feat_quantizer_dropout, k_dropout,
                           deterministic)
        quantized = self.quantizer(features, key=k_gumbel, temperature=gumbel_temperature)
        return PreTrainingOutput(
            projected_states=self.project_hid(out.last_hidden_state).astype(jnp.float32),
            projected_quantized_states=self.project_q(quantized.codevectors).astype(jnp.float32),
            codes=quantized.codes, code_probs=quantized.probs, conv_features=out.conv_features,
            frame_mask=out.frame_mask)


def _torch_bias_init(fan_in: int):
    bound = 1.0 / fan_in ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
