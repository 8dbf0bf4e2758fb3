r"""One training step, ours vs transformers' PyTorch Wav2Vec2 + a linear head + AdamW.

  python bench/train_step.py                         # large-lv60, 2 x 4 s, float32, CPU
  python bench/train_step.py --presets=base --repeats=3
  python bench/train_step.py --dtype=bfloat16 --notorch   # on a GPU: frames/s and MFU

Both sides: the same architecture and random weights, the same batch and labels, a
phase-2 step (everything but the CNN feature encoder is updated), dropout and
SpecAugment on as configured, LayerDrop off on both sides: it skips a random number of
layers per step, which would make the two timings measure different amounts of work.
Prints the median step of each side, ours/PyTorch, our compile time, and our FLOP
rate, counted from the architecture (w2v_jax.flops; XLA's cost analysis counts a scanned
layer stack once), as a fraction of a plain jitted matmul's rate measured in the same
run, and MFU on an accelerator.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bench.timing import device_peak_flops, matmul_peak_flops, median_seconds, rate_line  # noqa: E402

flags.DEFINE_list("presets", ["large-lv60"], "Model presets to time.")
flags.DEFINE_integer("batch", 2, "Utterances per batch.")
flags.DEFINE_float("seconds", 4.0, "Seconds of 16 kHz audio per utterance.")
flags.DEFINE_integer("repeats", 3, "Timed steps per side (median reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
flags.DEFINE_bool("torch", True, "Also time transformers' PyTorch model (CPU only).")
flags.DEFINE_bool("remat", False, "Our remat switch.")
flags.DEFINE_float("peak_tflops", None, "Device peak TFLOP/s for MFU (default: by device kind).")
FLAGS = flags.FLAGS
CLASSES = 5
TORCH_ADAMW = dict(lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)  # torch's defaults, lr ours


def ours(config, hf_state, audio, mask, labels):
    """(median step seconds, compile seconds) of our jitted phase-2 step."""
    import jax
    from flax import nnx

    from w2v_jax import sharding
    from w2v_jax.hf import from_state_dict
    from w2v_jax.train import FineTuning, default_config
    from w2v_jax.train import step as S
    from w2v_jax.train.heads import FrameClassifier

    train_config = default_config()
    train_config.data.dir = os.getcwd()  # not read
    # torch.optim.AdamW's defaults, as the PyTorch side uses them (no clipping on either side).
    train_config.optimizer.update(name="adamw", learning_rate=TORCH_ADAMW["lr"],
                                  b1=TORCH_ADAMW["betas"][0], b2=TORCH_ADAMW["betas"][1],
                                  eps=TORCH_ADAMW["eps"], weight_decay=TORCH_ADAMW["weight_decay"],
                                  clip_norm=0.0)
    model = FrameClassifier(from_state_dict(config, hf_state, source="bench"), ("tone",),
                            rngs=nnx.Rngs(0))
    graphdef, params, rng = S.split_model(model)
    task = FineTuning(train_config, config)
    phases = S.Phases(task)
    state = phases.initial_state(params, rng, 1)  # phase 2: heads and backbone
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    shardings = sharding.state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    batch = jax.device_put({"input_values": audio[None], "attention_mask": mask[None],
                            "labels/tone": labels[None]}, S.batch_shardings(mesh))
    step = S.jit_train_step(graphdef, task, 1, phases.optimizers[1], mesh, shardings)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics)

    run()  # warm-up
    return median_seconds(run, FLAGS.repeats), compile_s


def pytorch(config, audio, mask, labels, torch_model):
    import torch

    head = torch.nn.Linear(config.hidden_size, CLASSES)
    torch_model.train()
    torch_model.freeze_feature_encoder()
    optimizer = torch.optim.AdamW([p for p in torch_model.parameters() if p.requires_grad]
                                  + list(head.parameters()), **TORCH_ADAMW)
    inputs = torch.from_numpy(audio), torch.from_numpy(mask)
    target = torch.from_numpy(labels).long()

    def run():
        optimizer.zero_grad()
        hidden = torch_model(*inputs).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden).transpose(1, 2), target, ignore_index=-1)
        loss.backward()
        optimizer.step()

    run()  # warm-up: optimizer state allocated
    return median_seconds(run, FLAGS.repeats)


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    import transformers

    from w2v_jax import flops as F
    from w2v_jax.models import Wav2Vec2Config

    samples = int(FLAGS.seconds * 16000)
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(FLAGS.batch, samples)).astype(np.float32)
    mask = np.ones_like(audio, dtype=np.int32)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; torch threads: "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}; batch {FLAGS.batch} x "
          f"{FLAGS.seconds:g} s; ours in {FLAGS.dtype}", flush=True)
    peak, device_peak = matmul_peak_flops(FLAGS.dtype), device_peak_flops(FLAGS.peak_tflops)
    print(f"matmul peak: a plain jitted {FLAGS.dtype} matmul (2048^3) runs at {peak / 1e9:.0f} GFLOP/s here")
    for preset in FLAGS.presets:
        config = Wav2Vec2Config.preset(preset, dtype=FLAGS.dtype, remat=FLAGS.remat, layerdrop=0.0)
        frames = int(config.num_frames(samples))
        labels = rng.integers(0, CLASSES, (FLAGS.batch, frames)).astype(np.int32)
        torch.manual_seed(0)
        reference = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**config.to_hf()))
        hf_state = {k: v.numpy() for k, v in reference.state_dict().items()}
        ours_s, compile_s = ours(config, hf_state, audio, mask, labels)
        flops = F.fine_tune_step_flops(config, samples, FLAGS.batch, num_classes=CLASSES)
        line = (f"{preset:>11}: ours {ours_s:.3f} s/step ({rate_line(flops, ours_s, peak, device_peak)}, "
                f"{FLAGS.batch * frames / ours_s:.0f} frames/s, compile {compile_s:.1f} s)")
        if FLAGS.torch:
            theirs = pytorch(config, audio, mask, labels, reference)
            line += (f" | PyTorch {theirs:.3f} s/step ({rate_line(flops, theirs, peak, None)})"
                     f" | ours/PyTorch {ours_s / theirs:.2f}")
        print(line + f" | load average {os.getloadavg()[0]:.2f}", flush=True)
        del reference, hf_state


if __name__ == "__main__":
    app.run(main)
