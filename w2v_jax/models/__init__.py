"""wav2vec 2.0 in Flax NNX."""

from w2v_jax.models.config import PRESETS, ConfigError, Wav2Vec2Config
