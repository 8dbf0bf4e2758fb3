"""Hugging Face transformers checkpoints <-> our Flax model."""

from w2v_jax.hf.convert import (CheckpointError, from_state_dict, load_pretrained,
                                pretraining_from_state_dict, read_state_dict, save_pretrained,
                                to_state_dict)
from w2v_jax.hf.fairseq import load_fairseq
