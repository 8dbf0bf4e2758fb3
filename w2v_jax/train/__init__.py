"""Fine-tuning: frame classifiers, losses, the two-phase optimizer, the sharded loop, checkpoints."""

from w2v_jax.train.config import check_config, default_config, fingerprint
from w2v_jax.train.export import evaluate_run, export_backbone, restore_model
from w2v_jax.train.heads import FrameClassifier, confusion_matrix, masked_cross_entropy, multitask_loss
from w2v_jax.train.loop import train
from w2v_jax.train.optim import tri_stage_schedule
