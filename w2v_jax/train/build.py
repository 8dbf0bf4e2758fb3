"""From a config to the objects a run needs: the backbone's config, the model, the data splits."""

from __future__ import annotations

import ml_collections
from flax import nnx

from w2v_jax import checkpoint, data
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.train.config import MODEL_SWITCHES
from w2v_jax.train.heads import FrameClassifier


def _model_overrides(config: ml_collections.ConfigDict) -> dict:
    return {k: v for k, v in config.model.to_dict().items() if k != "preset"}


def backbone_config(config: ml_collections.ConfigDict) -> Wav2Vec2Config:
    """The backbone's architecture (from the preset or the checkpoint) with the run's switches.

    Reads only config files, so a bad value fails here, before anything compiles.
    """
    overrides = _model_overrides(config)
    if config.init == "random":
        return Wav2Vec2Config.preset(config.model.preset, **overrides)
    kind, directory = config.init.split(":", 1)
    switches = {k: v for k, v in overrides.items() if k in MODEL_SWITCHES}
    if kind == "hf":
        return Wav2Vec2Config.from_hf(directory, **switches)
    return checkpoint.load_config(directory, **switches)


def backbone(config: ml_collections.ConfigDict, model_config: Wav2Vec2Config) -> Wav2Vec2Model:
    if config.init == "random":  # model_config may carry fields set beyond the preset
        return Wav2Vec2Model(model_config, rngs=nnx.Rngs(config.seed))
    switches = {k: getattr(model_config, k) for k in MODEL_SWITCHES}
    return checkpoint.load_backbone(config.init, seed=config.seed, **switches)


def build_model(config: ml_collections.ConfigDict, model_config: Wav2Vec2Config) -> FrameClassifier:
    """The initial model: backbone as config.init says, heads at random (seeded)."""
    return FrameClassifier(backbone(config, model_config), tuple(config.tasks),
                           head_dropout=config.head_dropout, rngs=nnx.Rngs(config.seed + 1))


def abstract_model(config: ml_collections.ConfigDict, model_config: Wav2Vec2Config) -> FrameClassifier:
    """The model's structure without computing or reading any weights."""
    return nnx.eval_shape(lambda: FrameClassifier(
        Wav2Vec2Model(model_config, rngs=nnx.Rngs(config.seed)), tuple(config.tasks),
        head_dropout=config.head_dropout, rngs=nnx.Rngs(config.seed + 1)))


def load_split(config: ml_collections.ConfigDict, split: str,
               model_config: Wav2Vec2Config) -> data.DatasetSplit:
    if config.data.source == "prepared":
        return data.open_prepared(config.data.dir, split, model_config)
    return data.corpus_split(config.data.dir, split, model_config,
                             alignments_dir=config.data.alignments_dir or None)

