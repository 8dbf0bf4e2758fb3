"""The one table from transformers' Wav2Vec2Model parameter names to our Flax paths.

`{i}` is a conv layer index (its own module); `{l}` is an encoder layer, stored as
index l of the stacked `encoder/layers` parameters. Transforms take the PyTorch
array to our layout; `_INVERSE` undoes them exactly (transposes and reshapes only).
"""

from __future__ import annotations

import numpy as np

# PyTorch layout -> Flax layout.
_TRANSFORMS = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,  # (out, in) -> (in, out)
    "conv": lambda a: a.transpose(2, 1, 0),  # (out, in / groups, k) -> (k, in / groups, out)
    "weight_norm_g": lambda a: a.reshape(-1),  # (1, 1, k) -> (k,)  [torch weight_norm(dim=2)]
}
_INVERSE = {
    "copy": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 1, 0),
    "weight_norm_g": lambda a: a.reshape(1, 1, -1),
}

CONV_LAYER = (
    ("feature_extractor.conv_layers.{i}.conv.weight", "feature_extractor/conv_layers/{i}/kernel", "conv"),
    ("feature_extractor.conv_layers.{i}.conv.bias", "feature_extractor/conv_layers/{i}/bias", "copy"),
    ("feature_extractor.conv_layers.{i}.layer_norm.weight", "feature_extractor/conv_layers/{i}/norm/scale", "copy"),
    ("feature_extractor.conv_layers.{i}.layer_norm.bias", "feature_extractor/conv_layers/{i}/norm/bias", "copy"),
)
MODEL = (
    ("feature_projection.layer_norm.weight", "feature_projection/layer_norm/scale", "copy"),
    ("feature_projection.layer_norm.bias", "feature_projection/layer_norm/bias", "copy"),
    ("feature_projection.projection.weight", "feature_projection/projection/kernel", "linear"),
    ("feature_projection.projection.bias", "feature_projection/projection/bias", "copy"),
    ("masked_spec_embed", "masked_spec_embed", "copy"),
    ("encoder.pos_conv_embed.conv.weight_g", "encoder/pos_conv_embed/weight_g", "weight_norm_g"),
    ("encoder.pos_conv_embed.conv.weight_v", "encoder/pos_conv_embed/weight_v", "conv"),
    ("encoder.pos_conv_embed.conv.bias", "encoder/pos_conv_embed/bias", "copy"),
    ("encoder.layer_norm.weight", "encoder/layer_norm/scale", "copy"),
    ("encoder.layer_norm.bias", "encoder/layer_norm/bias", "copy"),
)
ENCODER_LAYER = tuple(
    (f"encoder.layers.{{l}}.{hf}.weight", f"encoder/layers/{flax}/kernel", "linear")
    for hf, flax in (("attention.q_proj", "attention/q_proj"), ("attention.k_proj", "attention/k_proj"),
                     ("attention.v_proj", "attention/v_proj"), ("attention.out_proj", "attention/out_proj"),
                     ("feed_forward.intermediate_dense", "feed_forward/intermediate_dense"),
                     ("feed_forward.output_dense", "feed_forward/output_dense"))
) + tuple(
    (f"encoder.layers.{{l}}.{hf}.bias", f"encoder/layers/{flax}/bias", "copy")
    for hf, flax in (("attention.q_proj", "attention/q_proj"), ("attention.k_proj", "attention/k_proj"),
                     ("attention.v_proj", "attention/v_proj"), ("attention.out_proj", "attention/out_proj"),
                     ("feed_forward.intermediate_dense", "feed_forward/intermediate_dense"),
                     ("feed_forward.output_dense", "feed_forward/output_dense"))
) + tuple(
    (f"encoder.layers.{{l}}.{norm}.{hf}", f"encoder/layers/{norm}/{flax}", "copy")
    for norm in ("layer_norm", "final_layer_norm") for hf, flax in (("weight", "scale"), ("bias", "bias"))
)

# Wav2Vec2ForPreTraining's own parameters (beside its `wav2vec2.` backbone); Flax paths are
# relative to our Wav2Vec2ForPreTraining.
PRETRAINING_HEADS = (
    ("quantizer.codevectors", "quantizer/codevectors", "copy"),
    ("quantizer.weight_proj.weight", "quantizer/weight_proj/kernel", "linear"),
    ("quantizer.weight_proj.bias", "quantizer/weight_proj/bias", "copy"),
    ("project_hid.weight", "project_hid/kernel", "linear"),
    ("project_hid.bias", "project_hid/bias", "copy"),
    ("project_q.weight", "project_q/kernel", "linear"),
    ("project_q.bias", "project_q/bias", "copy"),
)

# transformers >= 4.x saves torch.nn.utils.parametrizations.weight_norm under these names.
NEW_WEIGHT_NORM_KEYS = {
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
}


def to_flax(array: np.ndarray, transform: str) -> np.ndarray:
    return _TRANSFORMS[transform](array)


def to_torch(array: np.ndarray, transform: str) -> np.ndarray:
    return _INVERSE[transform](array)


def entries(flax_paths: set[str], num_conv_layers: int, num_layers: int):
    """(hf_name, flax_path, layer index or None, transform) for every parameter the model has."""
    for i in range(num_conv_layers):
        for hf, flax, transform in CONV_LAYER:
            if flax.format(i=i) in flax_paths:
                yield hf.format(i=i), flax.format(i=i), None, transform
    for hf, flax, transform in MODEL:
        if flax in flax_paths:
            yield hf, flax, None, transform
    for layer in range(num_layers):
        for hf, flax, transform in ENCODER_LAYER:
            yield hf.format(l=layer), flax, layer, transform
