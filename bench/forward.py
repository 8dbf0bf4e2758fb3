r"""Our jitted forward vs transformers' PyTorch forward: same weights, same input, one run.

  python bench/forward.py                                  # large-lv60 and base, 2 x 4 s, float32
  python bench/forward.py --presets=base --repeats=3       # quicker
  python bench/forward.py --dtype=bfloat16                 # on a GPU: throughput and MFU

Prints per preset: median seconds of each side, ours/PyTorch, first-call compile time,
and achieved GFLOP/s (matmul and conv FLOPs counted analytically).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bench.timing import median_seconds  # noqa: E402

flags.DEFINE_list("presets", ["large-lv60", "base"], "Model presets to time.")
flags.DEFINE_integer("batch", 2, "Utterances per batch.")
flags.DEFINE_float("seconds", 4.0, "Seconds of 16 kHz audio per utterance.")
flags.DEFINE_integer("repeats", 5, "Timed calls per side (median reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
flags.DEFINE_bool("torch", True, "Also time transformers' PyTorch model (CPU only).")
flags.DEFINE_float("peak_tflops", None, "Device peak TFLOP/s for MFU (default: H200/H100 bf16 dense).")
FLAGS = flags.FLAGS


def forward_flops(config, num_samples: int, batch: int) -> float:
    """2 * multiply-adds of every conv and matmul (softmax and norms ignored)."""
    flops, length, channels = 0.0, num_samples, 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        flops += 2 * length * kernel * channels * dim
        channels = dim
    d, t = config.hidden_size, length
    flops += 2 * t * channels * d  # feature projection
    flops += 2 * t * config.num_conv_pos_embeddings * d * d / config.num_conv_pos_embedding_groups
    per_layer = 2 * t * (4 * d * d + 2 * d * config.intermediate_size) + 2 * 2 * t * t * d
    return batch * (flops + config.num_hidden_layers * per_layer)


def matmul_gflops(dtype: str) -> float:
    """What XLA's dot reaches on this device: the ceiling for a matmul-bound model."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), dtype)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    return 2 * 2048 ** 3 / median_seconds(lambda: matmul(a).block_until_ready(), 5) / 1e9


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from w2v_jax.hf import from_state_dict
    from w2v_jax.models import Wav2Vec2Config

    num_samples = int(FLAGS.seconds * 16000)
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(FLAGS.batch, num_samples)).astype(np.float32)
    mask = np.ones_like(audio, dtype=np.int32)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; torch threads: "
          f"{torch.get_num_threads()}; batch {FLAGS.batch} x {FLAGS.seconds:g} s; ours in {FLAGS.dtype}")
    peak = matmul_gflops(FLAGS.dtype)
    print(f"roofline: a plain jitted {FLAGS.dtype} matmul (2048^3) runs at {peak:.0f} GFLOP/s here")
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
        flops = forward_flops(config, num_samples, FLAGS.batch)
        line = (f"{preset:>11}: ours {ours:.3f} s ({flops / ours / 1e9:.0f} GFLOP/s, "
                f"compile {compile_s:.1f} s; at the roofline {flops / peak / 1e9:.2f} s)")
        if FLAGS.torch:
            with torch.inference_mode():
                inputs = torch.from_numpy(audio), torch.from_numpy(mask)
                reference(*inputs)  # warm-up
                theirs = median_seconds(lambda: reference(*inputs), FLAGS.repeats)
                diff = np.abs(np.asarray(forward(params, audio_dev, mask_dev), np.float32)
                              - reference(*inputs).last_hidden_state.numpy()).max()
            line += (f" | PyTorch {theirs:.3f} s ({flops / theirs / 1e9:.0f} GFLOP/s)"
                     f" | ours/PyTorch {ours / theirs:.2f} | max |diff| {diff:.1e}")
        if jax.devices()[0].platform == "gpu":
            peak = (FLAGS.peak_tflops or 989.0) * 1e12
            frames = FLAGS.batch * config.num_frames(num_samples)
            line += f" | {frames / ours:.0f} frames/s, MFU {flops / ours / peak:.1%}"
        print(line, flush=True)
        del reference, model, params


if __name__ == "__main__":
    app.run(main)
