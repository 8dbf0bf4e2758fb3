r"""The demo: the tiny preset trained from scratch on the synthetic corpus, on a CPU in minutes.

  python -m launch.make_synthetic --out=runs/synthetic_corpus
  python -m launch.train --config=configs/synthetic_tiny.py:tone --workdir=runs/demo_tone

ARG: tone | final | sex | tone+sex | final+sex (any tasks joined by '+').
"""

import ml_collections

from w2v_jax.data.labels import task_weights
from w2v_jax.train.config import default_config


def get_config(arg: str = "tone") -> ml_collections.ConfigDict:
    c = default_config()
    c.init = "random"
    c.model.preset = "tiny"
    c.model.layerdrop = 0.0
    c.model.mask_time_prob = 0.0
    c.model.hidden_dropout = 0.0
    c.model.attention_dropout = 0.0
    c.data.source = "corpus"
    c.data.dir = "runs/synthetic_corpus"
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.data.num_buckets = 2
    c.tasks = task_weights(arg)
    c.optimizer.learning_rate = 2e-3  # with clipping: tone takes off in ~100 steps (BUILD_NOTES)
    c.optimizer.clip_norm = 1.0
    c.total_steps = 300
    c.freeze_steps = 20
    c.freeze_feature_encoder = False  # trained from scratch: the CNN must learn too
    c.log_every = 10
    c.eval_every = 100
    c.checkpoint_every = 100
    return c
