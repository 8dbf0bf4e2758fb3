"""w2v-jax: fine-tune wav2vec 2.0 in JAX/Flax and measure what each layer encodes."""

__version__ = "0.1.0"
