"""A model directory: our config as JSON beside an orbax checkpoint of the parameters.

    DIR/config.json   Wav2Vec2Config.to_dict()
    DIR/params/       orbax StandardCheckpointer (float32 parameters)

A pre-training model (Wav2Vec2ForPreTraining) adds its quantizer and projections beside the
backbone, so that the same directory is a backbone for `load_model` (fine-tuning's
init=model:DIR) and a whole pre-training model for `load_pretraining_model`:

    DIR/pretraining.json     PretrainingConfig
    DIR/pretraining_params/  quantizer, project_hid, project_q

On a local disk the directory is assembled under a temporary name and renamed into place;
on an object store (gs://) it is written in place with config.json last. Either way a
reader, which starts from config.json, never takes a half-written one for a model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from w2v_jax import files
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.models.pretraining import PretrainingConfig, Wav2Vec2ForPreTraining

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
PRETRAINING_FILE = "pretraining.json"
PRETRAINING_PARAMS_DIR = "pretraining_params"


def save_model(model: Wav2Vec2Model | Wav2Vec2ForPreTraining, directory: files.PathLike,
               write_extras: Callable[[epath.Path], None] | None = None) -> None:
    """Write a model directory. In a multi-process run every process calls it: each writes its
    shards of the parameters (orbax's collective save) and process 0 the rest, including what
    `write_extras(dir)` adds (a training record), all before the completion record."""
    directory = files.absolute(directory)
    # On an object store a directory without config.json is a killed export's: written again.
    if is_saved(directory) or (files.is_local(directory) and directory.exists()):
        raise FileExistsError(f"{directory} exists; refusing to overwrite a model directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    staging = _staging(directory)
    try:
        backbone = model.wav2vec2 if isinstance(model, Wav2Vec2ForPreTraining) else model
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / PARAMS_DIR, nnx.state(backbone, nnx.Param))
            if isinstance(model, Wav2Vec2ForPreTraining):
                checkpointer.save(staging / PRETRAINING_PARAMS_DIR, _pretraining_params(model))
            checkpointer.wait_until_finished()
        if primary:
            if write_extras:
                write_extras(staging)
            if isinstance(model, Wav2Vec2ForPreTraining):
                files.write_json(staging / PRETRAINING_FILE, model.pretraining.to_hf())
            files.write_json(staging / CONFIG_FILE, backbone.config.to_dict())  # last: see is_saved
            if staging != directory:
                os.replace(staging, directory)
        _sync_processes(f"save_model:{directory}:done")  # no process returns before it exists
    except BaseException:
        if primary:
            files.remove_tree(staging)
        raise


def is_saved(directory: files.PathLike) -> bool:
    """Whether `directory` is a whole model directory: config.json is written last."""
    return (files.path(directory) / CONFIG_FILE).exists()


def _staging(directory: epath.Path) -> epath.Path:
    """Where to assemble `directory`, empty and the same on every process: a new directory beside
    it on a local disk (renamed at the end), `directory` itself on an object store."""
    if files.is_local(directory) and jax.process_count() == 1:
        return files.path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    staging = (directory.parent / f".{directory.name}.tmp-multiprocess"
               if files.is_local(directory) else directory)
    if jax.process_index() == 0:  # a leftover of a killed export
        files.remove_tree(staging)
        staging.mkdir(parents=True)
    _sync_processes(f"save_model:{directory}:staged")
    return staging


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def load_config(directory: files.PathLike, **overrides) -> Wav2Vec2Config:
    if not is_saved(directory):
        raise FileNotFoundError(f"{directory} is not a model directory: {CONFIG_FILE} (written "
                                "last) is missing, so it is none or an interrupted export")
    return Wav2Vec2Config.from_dict({**files.read_json(files.path(directory) / CONFIG_FILE),
                                     **overrides})


def load_backbone(init: str, *, preset: str = "tiny", seed: int = 0,
                  **config_overrides) -> Wav2Vec2Model:
    """A backbone as `init` names it: "random" (the preset), "hf:HF_DIR" or "model:OUR_DIR"."""
    if init == "random":
        return Wav2Vec2Model(Wav2Vec2Config.preset(preset, **config_overrides), rngs=nnx.Rngs(seed))
    kind, _, directory = init.partition(":")
    if kind == "hf" and directory:
        from w2v_jax.hf import load_pretrained
        return load_pretrained(directory, seed=seed, **config_overrides)
    if kind == "model" and directory:
        return load_model(directory, seed=seed, **config_overrides)
    raise ValueError(f"init={init!r}: expected 'random', 'hf:HF_DIR' or 'model:MODEL_DIR'")


def load_model(directory: files.PathLike, *, seed: int = 0, **config_overrides) -> Wav2Vec2Model:
    """The model saved by `save_model`; overrides may change compute switches or dropout."""
    config = load_config(directory, **config_overrides)
    abstract = nnx.eval_shape(lambda: Wav2Vec2Model(config, rngs=nnx.Rngs(seed)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(files.absolute(directory) / PARAMS_DIR, _target(params))
    model = nnx.merge(graphdef, params, rest)
    model.rngs = nnx.Rngs(seed)
    return model


def _target(abstract_params: nnx.State) -> nnx.State:
    """Restore onto the default device, whatever mesh the parameters were saved from."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        abstract_params)


def is_pretraining_model(directory: files.PathLike) -> bool:
    """Whether `directory` holds a whole pre-training model (quantizer and projections too)."""
    return is_saved(directory) and (files.path(directory) / PRETRAINING_FILE).exists()


def load_pretraining_model(directory: files.PathLike, *, seed: int = 0,
                           **config_overrides) -> Wav2Vec2ForPreTraining:
    """The Wav2Vec2ForPreTraining that `save_model` wrote (placed on the default device)."""
    if not is_pretraining_model(directory):
        raise FileNotFoundError(f"{directory} is not a pre-training model directory: "
                                f"{PRETRAINING_FILE} is missing")
    pretraining = PretrainingConfig(**files.read_json(files.path(directory) / PRETRAINING_FILE))
    backbone = load_model(directory, seed=seed, **config_overrides)
    abstract = nnx.eval_shape(lambda: Wav2Vec2ForPreTraining(backbone.config, pretraining,
                                                             rngs=nnx.Rngs(seed)))
    with ocp.StandardCheckpointer() as checkpointer:
        heads = checkpointer.restore(files.absolute(directory) / PRETRAINING_PARAMS_DIR,
                                     _target(_pretraining_params(abstract)))
    nnx.update(abstract, heads)
    abstract.wav2vec2 = backbone
    return abstract


def _pretraining_params(model: Wav2Vec2ForPreTraining) -> nnx.State:
    """The parameters of the pre-training model outside its backbone."""
    return nnx.State({name: nnx.state(getattr(model, name), nnx.Param)
                      for name in ("quantizer", "project_hid", "project_q")})
