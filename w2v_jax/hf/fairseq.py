"""fairseq wav2vec 2.0 checkpoints (`.pt`) -> our models, without fairseq installed.

The file is read with `torch.load(weights_only=True)`: no pickled code runs. The
`argparse.Namespace` of old checkpoints' `args` is rebuilt as such; any other class a
checkpoint pickles (fairseq's meters and enums in `extra_state`, ...) becomes an inert
`Opaque` holding its arguments and state, so the file loads but none of its code does.

Parameter names go through one table, `FAIRSEQ_KEYS` (fairseq name -> transformers name,
as transformers' convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py pairs them),
then through the transformers loader (`w2v_jax.hf.convert`), which checks every key and
shape. The architecture comes from the checkpoint's `cfg["model"]` (or old `args`; a
fine-tuned model's `w2v_args`), or from `config=` / `pretraining_config=`.
"""

from __future__ import annotations

import argparse
import ast
import re
import warnings

import numpy as np

from w2v_jax.hf.convert import CheckpointError, from_state_dict, pretraining_from_state_dict
from w2v_jax.models import ConfigError, Wav2Vec2Config
from w2v_jax.models.pretraining import PretrainingConfig

# fairseq (Wav2Vec2Model, or its fine-tuned wrapper without `w2v_encoder.w2v_model.`) ->
# transformers' Wav2Vec2ForPreTraining. Conv layers are nn.Sequential: 0 is the conv, 2 the
# group norm (first layer of "default" models) or (TransposeLast, LayerNorm, TransposeLast).
FAIRSEQ_KEYS = tuple((re.compile(pattern), replacement) for pattern, replacement in (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
     r"wav2vec2.feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)",
     r"wav2vec2.feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",
     r"wav2vec2.feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"wav2vec2.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"wav2vec2.feature_projection.projection.\1"),
    (r"mask_emb", r"wav2vec2.masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"wav2vec2.encoder.pos_conv_embed.conv.\1"),
    (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original0",
     r"wav2vec2.encoder.pos_conv_embed.conv.weight_g"),
    (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original1",
     r"wav2vec2.encoder.pos_conv_embed.conv.weight_v"),
    (r"encoder\.layer_norm\.(weight|bias)", r"wav2vec2.encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"wav2vec2.encoder.layers.\1.attention.\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
     r"wav2vec2.encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
     r"wav2vec2.encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)",
     r"wav2vec2.encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)",
     r"wav2vec2.encoder.layers.\1.final_layer_norm.\2"),
    (r"quantizer\.vars", r"quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
    (r"project_q\.(weight|bias)", r"project_q.\1"),
    (r"final_proj\.(weight|bias)", r"project_hid.\1"),
))
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."
_FAIRSEQ_DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


class Opaque:
    """Stands in for a class a checkpoint pickles; keeps its arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def read_checkpoint(path: str) -> dict:
    """The checkpoint's top-level dict (`model`, `cfg` or `args`, ...), code-free."""
    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # not a zip checkpoint: torch.load says why below
        unsafe = []
        reason = e
    else:
        reason = None
    stand_ins = [argparse.Namespace] + [(Opaque, name) for name in unsafe
                                        if name != "argparse.Namespace"]
    try:
        with torch.serialization.safe_globals(stand_ins):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True "
                              f"({e if reason is None else reason})") from e
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(checkpoint).__name__}")
    return checkpoint


def _plain(value):
    """A config value: an Opaque enum member stands for its value."""
    if isinstance(value, Opaque) and len(value.args) == 1:
        return value.args[0]
    return value


def _as_dict(section) -> dict:
    if section is None:
        return {}
    if isinstance(section, argparse.Namespace):
        return vars(section)
    if isinstance(section, dict):
        return section
    raise CheckpointError(f"unreadable model configuration of type {type(section).__name__}")


def model_cfg(checkpoint: dict) -> dict:
    """The pre-training model's fairseq config (for a fine-tuned model: its `w2v_args`)."""
    cfg = _as_dict(checkpoint.get("cfg"))
    model = _as_dict(cfg.get("model")) if cfg else _as_dict(checkpoint.get("args"))
    inner = model.get("w2v_args")
    if inner is not None:
        inner = _as_dict(inner)
        model = _as_dict(inner["model"]) if "model" in inner else inner
    return {k: _plain(v) for k, v in model.items()}


def _conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's conv_feature_layers string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4",
    evaluated over literals, + and * only."""
    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ConfigError(f"conv_feature_layers={spec!r}: only lists of (dim, kernel, stride) "
                          "tuples joined by + and * are understood")

    layers = value(ast.parse(spec, mode="eval"))
    if not all(isinstance(layer, tuple) and len(layer) == 3 for layer in layers):
        raise ConfigError(f"conv_feature_layers={spec!r}: expected (dim, kernel, stride) tuples")
    return layers


def configs_from_cfg(cfg: dict, **overrides) -> tuple[Wav2Vec2Config, PretrainingConfig]:
    """Our configs from a fairseq wav2vec2 model config (fairseq's defaults where absent)."""
    if int(cfg.get("pos_conv_depth", 1)) != 1:
        raise ConfigError(f"pos_conv_depth={cfg['pos_conv_depth']}: only the single positional "
                          "conv of wav2vec 2.0 is supported")
    mode = cfg.get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise ConfigError(f"extractor_mode={mode!r}: expected 'default' or 'layer_norm'")
    dims, kernels, strides = zip(*_conv_layers(cfg.get("conv_feature_layers") or _FAIRSEQ_DEFAULT_CONV))
    hidden = int(cfg.get("encoder_embed_dim", 768))
    final_dim = int(cfg.get("final_dim", 0)) or hidden
    config = Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=int(cfg.get("encoder_layers", 12)),
        num_attention_heads=int(cfg.get("encoder_attention_heads", 12)),
        intermediate_size=int(cfg.get("encoder_ffn_embed_dim", 3072)),
        hidden_act=cfg.get("activation_fn", "gelu"),
        feat_extract_norm="group" if mode == "default" else "layer",
        do_stable_layer_norm=bool(cfg.get("layer_norm_first", False)),
        conv_bias=bool(cfg.get("conv_bias", False)), conv_dim=dims, conv_kernel=kernels,
        conv_stride=strides, num_conv_pos_embeddings=int(cfg.get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(cfg.get("conv_pos_groups", 16)))
    pretraining = PretrainingConfig(
        num_codevector_groups=int(cfg.get("latent_groups", 2)),
        num_codevectors_per_group=int(cfg.get("latent_vars", 320)),
        codevector_dim=int(cfg.get("latent_dim", 0)) or final_dim, proj_codevector_dim=final_dim,
        feat_quantizer_dropout=float(cfg.get("dropout_features", 0.0)))
    return config.replace(**overrides), pretraining


def to_transformers_names(state: dict[str, np.ndarray], source: str) -> tuple[dict, list[str]]:
    """fairseq names -> transformers Wav2Vec2ForPreTraining names, plus the skipped keys
    (a fine-tuned model's output projection `w2v_encoder.proj`); any other key is an error."""
    renamed, skipped, unknown = {}, [], []
    for name, value in state.items():
        if name.startswith(_FINETUNED_PREFIX):
            name = name[len(_FINETUNED_PREFIX):]
        elif name.startswith("w2v_encoder."):
            skipped.append(name)
            continue
        for pattern, replacement in FAIRSEQ_KEYS:
            match = pattern.fullmatch(name)
            if match:
                renamed[match.expand(replacement)] = value
                break
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointError(f"{source}: fairseq keys with no wav2vec 2.0 counterpart: {sorted(unknown)}")
    return renamed, sorted(skipped)


def load_fairseq(path: str, *, pretraining: bool = False, config: Wav2Vec2Config | None = None,
                 pretraining_config: PretrainingConfig | None = None, seed: int = 0,
                 **config_overrides):
    """A fairseq wav2vec 2.0 `.pt` (pre-trained, or fine-tuned with the `w2v_encoder.w2v_model.`
    prefix) -> Wav2Vec2Model, or with `pretraining=True` a Wav2Vec2ForPreTraining (the
    checkpoint must hold quantizer, project_q and final_proj: fine-tuning drops them).

    A file holding a bare state dict needs `config=` (and `pretraining_config=`).
    `config_overrides` set compute switches or dropout rates, as in `load_pretrained`.
    """
    import torch

    checkpoint = read_checkpoint(path)
    state = checkpoint.get("model", checkpoint)
    if config is None:
        if "cfg" not in checkpoint and "args" not in checkpoint:
            raise CheckpointError(f"{path}: no cfg or args to read the architecture from; pass config=")
        config, from_cfg = configs_from_cfg(model_cfg(checkpoint), **config_overrides)
        pretraining_config = pretraining_config or from_cfg
    else:
        config = config.replace(**config_overrides)
    state = {k: v.detach().to(torch.float32).numpy() for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    renamed, skipped = to_transformers_names(state, path)
    if pretraining:
        return pretraining_from_state_dict(config, pretraining_config or PretrainingConfig(), renamed,
                                           source=path, seed=seed)
    backbone = {k: v for k, v in renamed.items() if k.startswith("wav2vec2.")}
    skipped += sorted(name for name in renamed if not name.startswith("wav2vec2."))
    if skipped:
        warnings.warn(f"{path}: loading the backbone only; skipped {len(skipped)} tensors: "
                      f"{', '.join(skipped)}", stacklevel=2)
    return from_state_dict(config, {k[len("wav2vec2."):]: v for k, v in backbone.items()},
                           source=path, seed=seed)
