r"""fairseq's wav2vec 2.0 Large (LV-60) pre-training recipe, for pods.

  python -m launch.pretrain --config=configs/pretrain_large.py --workdir=gs://.../large \
      --config.data.dir=/data/unlabelled

Values from fairseq examples/wav2vec/config/pretraining/wav2vec2_large_librivox.yaml:
24 layers x 1024 (preset large-lv60: layer norm first, LayerNorm CNN with bias), final_dim 768
(codevector_dim and proj_codevector_dim: latent_dim 0 means final_dim), 2 x 320 codewords,
no dropout or LayerDrop, feature_grad_mult 1.0, loss weights [0.1, 0] (no feature penalty),
Gumbel temperature (2.0, 0.1, 0.999995), crops 320000 samples (20 s), files of at least
32000 (2 s), normalised audio, Adam (0.9, 0.98), eps 1e-6, decoupled weight decay 0.01
(fairseq's Adam is AdamW), peak lr 0.005, 1M updates, 32k warmup updates.

Differences: fairseq decays the lr linearly to 0 (polynomial_decay); our optimizer has the
tri-stage schedule only, so the 968k updates after warmup decay exponentially to 5% of the peak.
fairseq batches by max_tokens 1.2M samples on each of 128 GPUs (about 3.75 crops of 20 s
each, ~480 crops); here a global batch of 512 crops.
"""

import ml_collections

from w2v_jax.train.pretraining import pretrain_config


def get_config() -> ml_collections.ConfigDict:
    c = pretrain_config()
    c.model.preset = "large-lv60"
    c.model.update(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                   feat_proj_dropout=0.0, layerdrop=0.0, dtype="bfloat16", remat=True)
    c.pretraining.update(num_codevector_groups=2, num_codevectors_per_group=320,
                         codevector_dim=768, proj_codevector_dim=768, feat_quantizer_dropout=0.0)
    c.objective.update(feature_grad_mult=1.0, diversity_weight=0.1, feature_penalty_weight=0.0,
                       max_temperature=2.0, min_temperature=0.1, temperature_decay=0.999995)
    c.data.max_seconds = 20.0
    c.data.min_seconds = 2.0
    c.data.normalize = True
    c.data.batch_size = 512
    c.data.eval_batch_size = 512
    c.optimizer.update(name="adamw", learning_rate=0.005, b1=0.9, b2=0.98, eps=1e-6,
                       weight_decay=0.01, warmup_ratio=0.032, hold_ratio=0.0, decay_ratio=0.968)
    c.total_steps = 1_000_000
    c.log_every = 200
    c.eval_every = 25_000
    c.checkpoint_every = 25_000
    c.max_eval_batches = 20
    c.mesh.fsdp = 8
    return c
