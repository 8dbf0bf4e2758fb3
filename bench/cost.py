r"""Device-hours of the paper's grid and of a Large pre-training, from the analytic FLOP counts.

  python -m bench.cost                     # the table in docs/cost.md
  python -m bench.cost --mfu=0.3,0.5

Every assumption is a flag, printed with the table: the workload (updates, utterances and
their padded length), the chips' bf16 dense peaks and the MFU. Nothing here is measured.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("preset", "large-lv60", "Model preset.")
flags.DEFINE_list("mfu", ["0.35", "0.5"], "Model FLOP utilisations to cost at.")
flags.DEFINE_integer("fine_tunings", 5, "Fine-tunings in the grid.")
flags.DEFINE_integer("fine_tune_updates", 100_000, "Updates per fine-tuning.")
flags.DEFINE_integer("fine_tune_batch", 32, "Utterances per update (configs/aishell_large.py).")
flags.DEFINE_float("fine_tune_seconds", 5.0, "Padded utterance length (AISHELL-1 averages 4.5 s).")
flags.DEFINE_float("extract_hours", 178.0, "Audio each model's extraction reads (all of AISHELL-1).")
flags.DEFINE_integer("pretrain_updates", 1_000_000, "Pre-training updates.")
flags.DEFINE_float("pretrain_batch_hours", 2.7, "Audio per pre-training update, hours.")
flags.DEFINE_float("pretrain_crop_seconds", 20.0, "Pre-training crop length (320,000 samples).")
FLAGS = flags.FLAGS
# 8 chips of each; bf16 dense peak TFLOP/s per chip.
SYSTEMS = (("TPU v4-8", 8, 275.0), ("TPU v5e-8", 8, 197.0), ("8 x H100 SXM", 8, 989.0))
CLASSES = 5 + 40 + 2  # tone, finals, sex heads (the multi-task model; the others have fewer)


def main(argv):
    del argv
    from w2v_jax import flops
    from w2v_jax.models import Wav2Vec2Config

    config = Wav2Vec2Config.preset(FLAGS.preset)
    rate = 16000
    ft_samples = int(FLAGS.fine_tune_seconds * rate)
    ft_step = flops.fine_tune_step_flops(config, ft_samples, FLAGS.fine_tune_batch, num_classes=CLASSES)
    fine_tuning = FLAGS.fine_tunings * FLAGS.fine_tune_updates * ft_step
    forward_per_second = sum(flops.forward_flops(config, ft_samples).values()) / FLAGS.fine_tune_seconds
    extraction = (FLAGS.fine_tunings + 1) * FLAGS.extract_hours * 3600 * forward_per_second
    crop = int(FLAGS.pretrain_crop_seconds * rate)
    crops = FLAGS.pretrain_batch_hours * 3600 / FLAGS.pretrain_crop_seconds
    pretraining = FLAGS.pretrain_updates * flops.pretrain_step_flops(config, crop, 1) * crops
    rows = (("paper grid: 5 fine-tunings", fine_tuning),
            ("paper grid: extraction, 6 models", extraction),
            ("paper grid, total", fine_tuning + extraction),
            ("Large pre-training", pretraining))
    print(f"{FLAGS.preset}; fine-tuning step {ft_step / 1e12:.1f} TFLOP ({FLAGS.fine_tune_batch} x "
          f"{FLAGS.fine_tune_seconds:g} s, CNN frozen); pre-training "
          f"{flops.pretrain_step_flops(config, crop, 1) / FLAGS.pretrain_crop_seconds / 1e12:.2f} "
          "TFLOP per second of audio")
    mfus = [float(m) for m in FLAGS.mfu]
    print("wall-clock hours of each 8-chip system (chip-hours are 8x)")
    header = " | ".join(f"{name} @ {m:.0%}" for name, _, _ in SYSTEMS for m in mfus)
    print(f"| workload | EFLOP | {header} |")
    print("|---|---" + "|---" * len(SYSTEMS) * len(mfus) + "|")
    for name, total in rows:
        hours = [total / (chips * peak * 1e12 * m) / 3600 for _, chips, peak in SYSTEMS for m in mfus]
        print(f"| {name} | {total / 1e18:.1f} | " + " | ".join(f"{h:,.1f}" if h < 100 else f"{h:,.0f}" for h in hours) + " |")


if __name__ == "__main__":
    app.run(main)
