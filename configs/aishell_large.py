r"""The paper's runs: wav2vec 2.0 Large fine-tuned frame-wise on AISHELL-1.

  python -m launch.train --config=configs/aishell_large.py:tone+sex --workdir=runs/tone_sex \
      --config.init=hf:PATH/TO/wav2vec2-large --config.data.dir=PATH/TO/prepared_aishell1

ARG: TASKS[,specaugment=transformers|fairseq]. TASKS: tone | finals | sex | tone+sex |
finals+sex (any tasks joined by '+'; 'final' = 'finals'). Schedule as in the paper: 10,000
heads-only steps, then all but the CNN to 100,000.

SpecAugment presets (the paper fine-tuned through transformers, hence its default):
- transformers: transformers' Wav2Vec2Config defaults, time masks only (p 0.05, length 10).
- fairseq: fairseq's wav2vec 2.0 fine-tuning recipe (examples/wav2vec/config/finetuning/
  vox_100h.yaml): time masks p 0.5 length 10, channel masks p 0.5 length 64,
  activation dropout 0.1.
"""

import ml_collections

from w2v_jax.data.labels import task_weights
from w2v_jax.train.config import default_config


SPECAUGMENT = {
    "transformers": {"mask_time_prob": 0.05, "mask_time_length": 10, "mask_feature_prob": 0.0},
    "fairseq": {"mask_time_prob": 0.5, "mask_time_length": 10, "mask_feature_prob": 0.5,
                "mask_feature_length": 64, "activation_dropout": 0.1},
}


def _parse_arg(arg: str) -> tuple[str, str]:
    tasks, *options = arg.split(",")
    specaugment = "transformers"
    for option in options:
        key, _, value = option.partition("=")
        if key != "specaugment" or value not in SPECAUGMENT:
            raise ValueError(f"configs/aishell_large.py argument {arg!r}: options are "
                             f"specaugment={'|'.join(SPECAUGMENT)}")
        specaugment = value
    return tasks, specaugment


def get_config(arg: str = "tone") -> ml_collections.ConfigDict:
    tasks, specaugment = _parse_arg(arg)
    c = default_config()
    c.init = "hf:models/wav2vec2-large"  # a transformers checkpoint dir (override)
    # The architecture of that default init (facebook/wav2vec2-large: post-LN, group-norm CNN),
    # so init=random trains a Large too. Only init=random reads it; use "large-lv60" to match
    # a pre-LN (lv60, XLSR) checkpoint.
    c.model.preset = "large"
    c.model.layerdrop = 0.1
    c.model.update(SPECAUGMENT[specaugment])
    c.model.dtype = "float32"  # "bfloat16" on GPU/TPU
    c.model.remat = False
    c.model.scan_layers = True
    c.data.source = "prepared"  # python -m launch.prepare_data
    c.data.dir = "data/aishell1"
    c.data.batch_size = 32
    c.data.eval_batch_size = 32
    c.tasks = task_weights(tasks)
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 5e-5
    c.optimizer.clip_norm = 0.0
    c.total_steps = 100_000
    c.freeze_steps = 10_000
    c.freeze_feature_encoder = True
    c.best_metric = "accuracy"
    c.log_every = 100
    c.eval_every = 2_000
    c.checkpoint_every = 2_000
    return c
