r"""Our pre-training against transformers' PyTorch Wav2Vec2ForPreTraining, on the same batches.

  python -m bench.pretrain_vs_transformers --data_dir=/tmp/w2v-jax/espeak --steps=300

Both start from their own random init and train `configs/pretrain_small.py` for --steps updates
on exactly the same audio, span masks and distractors (our task's train_batches), with the same
learning-rate schedule, Gumbel temperature, AdamW, clipping and dropout, and with the objective
transformers implements: contrastive + diversity_weight x diversity, no feature penalty, the CNN
gradient unscaled. Ours runs through the real trainer (launch.pretrain's loop.run); theirs is the
loop of transformers' run_wav2vec2_pretraining_no_trainer.py. Gumbel noise and dropout masks
differ, so the curves agree statistically, not bit for bit. It prints the contrastive loss per
masked frame of each every --every updates, then the speed of each and their ratio.
A gap in the curves would be a defect of our training that the one-step parity tests
(tests/test_pretrain.py) cannot see.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("data_dir", None, "A folder of wav/flac files or a generated corpus.", required=True)
flags.DEFINE_integer("steps", 300, "Updates of each.")
flags.DEFINE_integer("every", 50, "Report the mean contrastive loss over this many updates.")
flags.DEFINE_integer("threads", 2, "torch intra-op threads (the CPU cores).")
FLAGS = flags.FLAGS


def config(data_dir: str, steps: int):
    from configs.pretrain_small import get_config

    c = get_config()
    c.data.dir = data_dir
    c.total_steps = steps
    c.log_every = FLAGS.every
    c.eval_every = c.checkpoint_every = steps
    c.max_eval_batches = 1
    c.objective.update(feature_grad_mult=1.0, feature_penalty_weight=0.0)  # transformers has neither
    return c


def train_transformers(c) -> tuple[list[float], float]:
    """Contrastive loss per masked frame, averaged over each --every updates; seconds per update."""
    import numpy as np
    import torch
    import transformers

    from w2v_jax import pretrain
    from w2v_jax.hf.convert import _hf_config
    from w2v_jax.train.optim import schedule_from_config
    from w2v_jax.train.pretraining import PreTraining

    torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(c.seed)
    task = PreTraining(c)
    task.prepare("", resuming=False)
    model = transformers.Wav2Vec2ForPreTraining(
        transformers.Wav2Vec2Config(**_hf_config(task.build_model(abstract=True)))).train()
    o, schedule = c.optimizer, schedule_from_config(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0, betas=(o.b1, o.b2), eps=o.eps,
                                  weight_decay=o.weight_decay)
    batches = task.train_batches(c.data.batch_size)
    curve, loss_sum, masked, start = [], 0.0, 0.0, time.perf_counter()
    try:
        for step in range(c.total_steps):
            batch = next(batches)
            rows, frames, _ = batch["negative_frames"].shape
            negatives = batch["negative_frames"] + (np.arange(rows) * frames)[:, None, None]
            model.set_gumbel_temperature(float(pretrain.gumbel_temperature(step, task.objective)))
            for group in optimizer.param_groups:
                group["lr"] = float(schedule(step))
            out = model(torch.from_numpy(batch["input_values"]),
                        attention_mask=torch.from_numpy(batch["attention_mask"]),
                        mask_time_indices=torch.from_numpy(batch["mask_time_indices"]),
                        sampled_negative_indices=torch.from_numpy(negatives).long())
            count = float(batch["mask_time_indices"].sum())
            ((out.contrastive_loss + c.objective.diversity_weight * out.diversity_loss) / count).backward()
            if o.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
            optimizer.step()
            optimizer.zero_grad()
            loss_sum, masked = loss_sum + float(out.contrastive_loss.detach()), masked + count
            if (step + 1) % FLAGS.every == 0:
                curve.append(loss_sum / masked)
                loss_sum = masked = 0.0
    finally:
        batches.close()
    return curve, (time.perf_counter() - start) / c.total_steps


def train_ours(c, workdir: str) -> tuple[list[float], float]:
    from w2v_jax.train.metrics import METRICS_FILE
    from w2v_jax.train.pretraining import run_pretraining

    run_pretraining(c, workdir)
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train = [r for r in rows if "train/contrastive_loss" in r]
    # steps_per_sec of the rows after the first, which carries the compilation
    rates = [r["train/steps_per_sec"] for r in train[1:]] or [train[0]["train/steps_per_sec"]]
    return [r["train/contrastive_loss"] for r in train], 1.0 / (sum(rates) / len(rates))


def main(argv):
    del argv
    c = config(os.path.abspath(FLAGS.data_dir), FLAGS.steps)
    with tempfile.TemporaryDirectory() as workdir:
        ours, our_seconds = train_ours(c, workdir)
    theirs, their_seconds = train_transformers(c)
    print(f"\ncontrastive loss per masked frame (chance ln({c.objective.num_negatives + 1}) "
          f"= {math.log(c.objective.num_negatives + 1):.2f}), "
          f"mean over each {FLAGS.every} updates:")
    print(f"{'updates':>8} {'w2v-jax':>9} {'transformers':>13} {'difference':>11}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        print(f"{(i + 1) * FLAGS.every:>8} {a:>9.3f} {b:>13.3f} {a - b:>+11.3f}")
    print(f"\nseconds per update: w2v-jax {our_seconds:.3f}, transformers {their_seconds:.3f}; "
          f"w2v-jax / transformers speed: {their_seconds / our_seconds:.2f}")


if __name__ == "__main__":
    app.run(main)
