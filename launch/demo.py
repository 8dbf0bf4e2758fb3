r"""The built-in default: the tiny preset on a synthetic waveform, every hidden state's shape.

  python -m launch.demo

(Until the full demo lands: synthetic corpus -> fine-tune -> extract -> SVCCA report.)
"""

from absl import app, flags

flags.DEFINE_integer("seed", 0, "Seed of the random model and waveform.")
flags.DEFINE_float("seconds", 2.0, "Length of the synthetic waveform.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import numpy as np
    from flax import nnx

    from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config.preset("tiny")
    model = Wav2Vec2Model(config, rngs=nnx.Rngs(FLAGS.seed))
    t = np.arange(int(FLAGS.seconds * 16000)) / 16000
    audio = np.sin(2 * np.pi * (110 + 110 * t) * t)[None].astype(np.float32)  # a rising tone
    out = jax.jit(lambda x: model(x))(audio)
    print(f"tiny preset: {config.num_hidden_layers} layers, hidden {config.hidden_size}; "
          f"{audio.shape[1]} samples -> {out.frame_mask.shape[1]} frames")
    print(f"extract_features  {tuple(out.extract_features.shape)}")
    for i, h in enumerate(out.hidden_states):
        print(f"hidden_states[{i}]  {tuple(h.shape)}")
    print(f"last_hidden_state {tuple(out.last_hidden_state.shape)}")


if __name__ == "__main__":
    app.run(main)
