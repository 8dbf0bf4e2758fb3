r"""Our jitted forward vs transformers' PyTorch forward: same weights, same input, one run.

  python bench/forward.py                                  # large-lv60 and base, 2 x 4 s, float32
  python bench/forward.py --presets=base --repeats=3       # quicker
  python bench/forward.py --dtype=bfloat16                 # on a GPU: throughput and MFU

Prints per preset: median seconds of each side, ours/PyTorch, first-call compile time,
and achieved GFLOP/s (w2v_jax.flops: conv and matmul FLOPs counted analytically) as a
fraction of a plain jitted matmul's rate measured in the same run, and MFU on an accelerator.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bench.timing import device_peak_flops, matmul_peak_flops, median_seconds, rate_line  # noqa: E402

flags.DEFINE_list("presets", ["large-lv60", "base"], "Model presets to time.")
flags.DEFINE_integer("batch", 2, "Utterances per batch.")
flags.DEFINE_float("seconds", 4.0, "Seconds of 16 kHz audio per utterance.")
flags.DEFINE_integer("repeats", 5, "Timed calls per side (median reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
flags.DEFINE_bool("torch", True, "Also time transformers' PyTorch model (CPU only).")
flags.DEFINE_float("peak_tflops", None, "Device peak TFLOP/s for MFU (default: by device kind).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from w2v_jax import flops as F
    from w2v_jax.hf import from_state_dict
    from w2v_jax.models import Wav2Vec2Config

    num_samples = int(FLAGS.seconds * 16000)
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(FLAGS.batch, num_samples)).astype(np.float32)
    mask = np.ones_like(audio, dtype=np.int32)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; torch threads: "
          f"{torch.get_num_threads()}; batch {FLAGS.batch} x {FLAGS.seconds:g} s; ours in {FLAGS.dtype}")
    peak = matmul_peak_flops(FLAGS.dtype)
    device_peak = device_peak_flops(FLAGS.peak_tflops)
    print(f"matmul peak: a plain jitted {FLAGS.dtype} matmul (2048^3) runs at {peak / 1e9:.0f} GFLOP/s here")
    for preset in FLAGS.presets:
        config = Wav2Vec2Config.preset(preset, dtype=FLAGS.dtype)
        torch.manual_seed(0)
        reference = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**config.to_hf())).eval()
        state = {k: v.numpy() for k, v in reference.state_dict().items()}
        model = from_state_dict(config, state, source=preset)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        forward = jax.jit(lambda p, a, m: nnx.merge(graphdef, p, rest)(
            a, m, output_hidden_states=False).last_hidden_state)
        audio_dev, mask_dev = jax.device_put(audio), jax.device_put(mask)

        start = time.perf_counter()
        forward(params, audio_dev, mask_dev).block_until_ready()
        compile_s = time.perf_counter() - start
        ours = median_seconds(lambda: forward(params, audio_dev, mask_dev).block_until_ready(),
                              FLAGS.repeats)
        flops = FLAGS.batch * sum(F.forward_flops(config, num_samples).values())
        frames = F.frames_per_step(config, num_samples, FLAGS.batch)
        line = (f"{preset:>11}: ours {ours:.3f} s ({rate_line(flops, ours, peak, device_peak)}, "
                f"{frames / ours:.0f} frames/s, compile {compile_s:.1f} s)")
        if FLAGS.torch:
            with torch.inference_mode():
                inputs = torch.from_numpy(audio), torch.from_numpy(mask)
                reference(*inputs)  # warm-up
                theirs = median_seconds(lambda: reference(*inputs), FLAGS.repeats)
                diff = np.abs(np.asarray(forward(params, audio_dev, mask_dev), np.float32)
                              - reference(*inputs).last_hidden_state.numpy()).max()
            line += (f" | PyTorch {theirs:.3f} s ({rate_line(flops, theirs, peak, None)})"
                     f" | ours/PyTorch {ours / theirs:.2f} | max |diff| {diff:.1e}")
        print(line, flush=True)
        del reference, model, params


if __name__ == "__main__":
    app.run(main)
