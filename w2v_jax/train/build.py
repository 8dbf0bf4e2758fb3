"""From a config to the objects a run needs: the backbone's config, the backbone, the data splits."""

from __future__ import annotations

import ml_collections
from flax import nnx

from w2v_jax import checkpoint, data
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.train.config import MODEL_SWITCHES, model_overrides


def backbone_config(config: ml_collections.ConfigDict) -> Wav2Vec2Config:
    """The backbone's architecture (from the preset or the checkpoint) with the run's switches.

    Reads only config files, so a bad value fails here, before anything compiles. A run saves
    the result in its workdir (export.run_backbone_config), so only a new run reads config.init.
    """
    overrides = model_overrides(config)
    if config.init == "random":
        return Wav2Vec2Config.preset(config.model.preset, **overrides)
    kind, directory = config.init.split(":", 1)
    if kind == "hf":
        return Wav2Vec2Config.from_hf(directory, **overrides)
    return checkpoint.load_config(directory, **overrides)


def with_switches(model_config: Wav2Vec2Config, config: ml_collections.ConfigDict) -> Wav2Vec2Config:
    """`model_config`'s architecture with config.model's switches (dropout, compute policy)."""
    return model_config.replace(**{k: config.model[k] for k in MODEL_SWITCHES})


def backbone(config: ml_collections.ConfigDict, model_config: Wav2Vec2Config) -> Wav2Vec2Model:
    if config.init == "random":  # model_config may carry fields set beyond the preset
        return Wav2Vec2Model(model_config, rngs=nnx.Rngs(config.seed))
    switches = {k: getattr(model_config, k) for k in MODEL_SWITCHES}
    return checkpoint.load_backbone(config.init, seed=config.seed, **switches)


def load_split(config: ml_collections.ConfigDict, split: str,
               model_config: Wav2Vec2Config) -> data.DatasetSplit:
    if config.data.source == "prepared":
        return data.open_prepared(config.data.dir, split, model_config)
    return data.corpus_split(config.data.dir, split, model_config,
                             alignments_dir=config.data.alignments_dir or None)

