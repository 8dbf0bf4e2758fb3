"""wav2vec 2.0 in Flax NNX."""

from w2v_jax.models.config import PRESETS, ConfigError, Wav2Vec2Config
from w2v_jax.models.wav2vec2 import Wav2Vec2Model, Wav2Vec2Output
from w2v_jax.models.pretraining import PretrainingConfig, PreTrainingOutput, Wav2Vec2ForPreTraining
