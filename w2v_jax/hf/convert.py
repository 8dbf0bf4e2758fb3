"""Hugging Face wav2vec 2.0 checkpoints <-> our Flax model, through `mapping.py`."""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from w2v_jax import files
from w2v_jax.hf import mapping
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.models.pretraining import PretrainingConfig, Wav2Vec2ForPreTraining

_PREFIX = "wav2vec2."
_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors",
                 "pytorch_model.bin.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and keys."""


# ------------------------------------------------------------------ reading
def _read_file(path: str) -> dict[str, np.ndarray]:
    import torch  # only for reading; a checkpoint never executes code (weights_only)

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        tensors = load_file(path)
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().to(torch.float32).numpy() for k, v in tensors.items()}


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of a HF checkpoint dir: safetensors, sharded safetensors or .bin."""
    for name in _WEIGHT_FILES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        if not name.endswith(".index.json"):
            return _read_file(path)
        with open(path) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            shard_path = os.path.join(directory, shard)
            if not os.path.exists(shard_path):
                raise CheckpointError(f"{path} names shard {shard}, which is missing")
            state.update(_read_file(shard_path))
        return state
    raise CheckpointError(f"{directory}: no weights found (looked for {', '.join(_WEIGHT_FILES)})")


def _backbone_state(state: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Strip a task model's `wav2vec2.` prefix, drop its heads, rename new weight-norm keys."""
    if any(k.startswith(_PREFIX) for k in state):
        heads = sorted(k for k in state if not k.startswith(_PREFIX))
        if heads:
            # warnings, not absl logging: absl's INFO is invisible from plain Python.
            warnings.warn(f"{source}: loading the backbone only; skipped {len(heads)} task-head "
                          f"tensors: {', '.join(heads)}", stacklevel=3)
        state = {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)}
    return {mapping.NEW_WEIGHT_NORM_KEYS.get(k, k): v for k, v in state.items()}


# --------------------------------------------------------------- converting
def _flat_params(model: Wav2Vec2Model) -> dict[str, jax.Array]:
    return {"/".join(map(str, path)): var.get_value()
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _entries(config: Wav2Vec2Config, flax_paths):
    return list(mapping.entries(set(flax_paths), len(config.conv_dim), config.num_hidden_layers))


_SPEC_EMBED = "masked_spec_embed"


def _transformers_keeps_spec_embed(config: Wav2Vec2Config) -> bool:
    """transformers' Wav2Vec2Model has masked_spec_embed only while SpecAugment is on."""
    return config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0


def from_state_dict(config: Wav2Vec2Config, state: dict[str, np.ndarray], *, source: str = "<state>",
                    seed: int = 0) -> Wav2Vec2Model:
    """A model with exactly the given backbone tensors: any missing or extra key is an error,
    except masked_spec_embed, which checkpoints saved with SpecAugment off lack."""
    state = _backbone_state(state, source)
    abstract = nnx.eval_shape(lambda: Wav2Vec2Model(config, rngs=nnx.Rngs(seed)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    shapes = {"/".join(map(str, path)): var.shape for path, var in nnx.to_flat_state(params)}
    entries = _entries(config, shapes)
    expected = {hf for hf, *_ in entries}
    fresh = {_SPEC_EMBED} - set(state)
    if fresh:
        logging.info("%s has no %s (SpecAugment was off): initialised at random, as transformers "
                     "does", source, _SPEC_EMBED)
    missing, unexpected = sorted(expected - set(state) - fresh), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{source}: backbone keys do not match the config "
                              f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})")
    values: dict[str, np.ndarray] = {}
    stacked: dict[str, list] = {}
    for hf, flax, layer, transform in entries:
        if hf in fresh:
            values[flax] = jax.random.uniform(jax.random.key(seed), shapes[flax])
            continue
        value = mapping.to_flax(state[hf], transform)
        if layer is None:
            values[flax] = value
        else:
            stacked.setdefault(flax, []).append(value)
    values.update({flax: np.stack(layers) for flax, layers in stacked.items()})
    return _filled(graphdef, params, rest, values, source, seed)


def _filled(graphdef, params, rest, values: dict[str, np.ndarray], source: str, seed: int):
    """The abstract model (graphdef, params, rest) with `values` for every parameter path."""
    for path, var in nnx.to_flat_state(params):
        flax = "/".join(map(str, path))
        if tuple(values[flax].shape) != tuple(var.shape):
            raise CheckpointError(f"{source}: {flax} has shape {tuple(values[flax].shape)} (our "
                                  f"layout); the config expects {tuple(var.shape)}")
    params = nnx.from_flat_state([
        (path, var.replace(jnp.asarray(values["/".join(map(str, path))])))
        for path, var in nnx.to_flat_state(params)])
    model = nnx.merge(graphdef, params, rest)
    backbone = model.wav2vec2 if isinstance(model, Wav2Vec2ForPreTraining) else model
    backbone.rngs = nnx.Rngs(seed)
    return model


def pretraining_from_state_dict(config: Wav2Vec2Config, pretraining: PretrainingConfig,
                                state: dict[str, np.ndarray], *, source: str = "<state>",
                                seed: int = 0) -> Wav2Vec2ForPreTraining:
    """transformers' Wav2Vec2ForPreTraining state dict -> our model; every key must match."""
    heads = {k: v for k, v in state.items() if not k.startswith(_PREFIX)}
    expected = {hf for hf, _, _ in mapping.PRETRAINING_HEADS}
    missing, unexpected = sorted(expected - set(heads)), sorted(set(heads) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: not a Wav2Vec2ForPreTraining checkpoint (missing: {missing or 'none'}; "
            f"unexpected: {unexpected or 'none'}); load it with pretraining=False for the backbone")
    backbone = from_state_dict(config, {k[len(_PREFIX):]: v for k, v in state.items()
                                        if k.startswith(_PREFIX)}, source=source, seed=seed)
    values = {f"wav2vec2/{path}": np.asarray(value) for path, value in _flat_params(backbone).items()}
    values.update({flax: mapping.to_flax(heads[hf], transform)
                   for hf, flax, transform in mapping.PRETRAINING_HEADS})
    abstract = nnx.eval_shape(lambda: Wav2Vec2ForPreTraining(config, pretraining, rngs=nnx.Rngs(seed)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    return _filled(graphdef, params, rest, values, source, seed)


def to_state_dict(model: Wav2Vec2Model | Wav2Vec2ForPreTraining) -> dict[str, np.ndarray]:
    """transformers' Wav2Vec2Model (or Wav2Vec2ForPreTraining) state dict, new-style
    weight-norm keys."""
    if isinstance(model, Wav2Vec2ForPreTraining):
        state = {_PREFIX + k: v for k, v in to_state_dict(model.wav2vec2).items()}
        params = _flat_params(model)
        for hf, flax, transform in mapping.PRETRAINING_HEADS:
            value = np.asarray(jax.device_get(params[flax]), np.float32)
            state[hf] = np.ascontiguousarray(mapping.to_torch(value, transform))
        return state
    params = _flat_params(model)
    renamed = {old: new for new, old in mapping.NEW_WEIGHT_NORM_KEYS.items()}
    state = {}
    for hf, flax, layer, transform in _entries(model.config, params):
        if hf == _SPEC_EMBED and not _transformers_keeps_spec_embed(model.config):
            continue
        value = np.asarray(jax.device_get(params[flax]), np.float32)
        if layer is not None:
            value = value[layer]
        state[renamed.get(hf, hf)] = np.ascontiguousarray(mapping.to_torch(value, transform))
    return state


# ----------------------------------------------------------------- public
def load_pretrained(path: str, *, pretraining: bool = False, seed: int = 0,
                    **config_overrides) -> Wav2Vec2Model | Wav2Vec2ForPreTraining:
    """A HF checkpoint directory (config.json + weights) -> Wav2Vec2Model, or with
    `pretraining=True` a Wav2Vec2ForPreTraining keeping the checkpoint's quantizer and
    projections (the checkpoint must be a transformers Wav2Vec2ForPreTraining).

    `config_overrides` set compute switches (dtype, scan_layers, remat) or dropout rates.
    A backbone load of a task model skips its heads and says so with `warnings.warn`.
    """
    path = files.local_only(path, "a Hugging Face checkpoint (read by torch and safetensors)")
    config = Wav2Vec2Config.from_hf(path, **config_overrides)
    if pretraining:
        model = pretraining_from_state_dict(config, PretrainingConfig.from_hf(path),
                                            read_state_dict(path), source=path, seed=seed)
    else:
        model = from_state_dict(config, read_state_dict(path), source=path, seed=seed)
    logging.info("loaded %s (%d layers, hidden %d)", path, config.num_hidden_layers, config.hidden_size)
    return model


def save_pretrained(model: Wav2Vec2Model | Wav2Vec2ForPreTraining, path: files.PathLike) -> None:
    """A directory that transformers' Wav2Vec2Model.from_pretrained (for a
    Wav2Vec2ForPreTraining: Wav2Vec2ForPreTraining.from_pretrained) loads; written whole: on a
    local disk staged and renamed, on an object store in place with config.json last (what
    transformers reads first)."""
    from safetensors.numpy import save, save_file

    path = files.absolute(path)
    if (path / "config.json").exists() or (files.is_local(path) and path.exists()
                                           and any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not empty")
    state, metadata = to_state_dict(model), {"format": "pt"}
    if files.is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = files.path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
        save_file(state, os.fspath(staging / "model.safetensors"), metadata=metadata)
    else:
        staging = path
        files.write_bytes(staging / "model.safetensors", save(state, metadata=metadata))
    files.write_json(staging / "config.json", _hf_config(model))
    if staging != path:
        if path.exists():
            os.rmdir(path)
        os.replace(staging, path)


def _hf_config(model: Wav2Vec2Model | Wav2Vec2ForPreTraining) -> dict:
    config = model.config.to_hf()
    if isinstance(model, Wav2Vec2ForPreTraining):
        config.update(model.pretraining.to_hf(), architectures=["Wav2Vec2ForPreTraining"])
    return config
