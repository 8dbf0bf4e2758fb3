"""w2v-jax: fine-tune wav2vec 2.0 in JAX/Flax and measure what each layer encodes."""

__version__ = "0.1.0"

from w2v_jax import logs as _logs

_logs.quiet_library_logs()  # orbax's and TFDS's routine lines; our warnings still show
