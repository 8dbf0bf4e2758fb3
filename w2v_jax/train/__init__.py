"""Training: one loop (loop.run) for any objective (task.Task); fine-tuning frame classifiers
(finetune.FineTuning) with the two-phase optax optimizer; checkpoints, export, evaluation."""

from w2v_jax.train.config import check_config, default_config, fingerprint
from w2v_jax.train.export import evaluate_run, export_backbone, restore_model
from w2v_jax.train.finetune import FineTuning, train
from w2v_jax.train.heads import FrameClassifier, confusion_matrix, masked_cross_entropy, multitask_loss
from w2v_jax.train.loop import run
from w2v_jax.train.optim import tri_stage_schedule
from w2v_jax.train.task import Task
