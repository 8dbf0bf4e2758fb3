r"""Convert a Hugging Face wav2vec 2.0 checkpoint to our model directory, or back.

  python -m launch.convert --hf_dir=wav2vec2-large-xlsr-53 --output_dir=models/xlsr
  python -m launch.convert --to_hf --checkpoint=models/xlsr --output_dir=xlsr-hf

A pre-training model directory (launch.pretrain's WORKDIR/model) converts to a transformers
Wav2Vec2ForPreTraining, quantizer and projections included.
"""

from absl import app, flags, logging

from launch import cli

flags.DEFINE_string("hf_dir", None, "HF checkpoint dir (config.json + weights) to convert from.")
flags.DEFINE_string("checkpoint", None, "Our model dir to convert from (with --to_hf).")
flags.DEFINE_string("output_dir", None, "Where to write the converted model.", required=True)
flags.DEFINE_bool("to_hf", False, "Convert our model dir to a HF dir instead.")
cli.existing_dirs("hf_dir", "checkpoint")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax import checkpoint, hf

    if FLAGS.to_hf:
        if not FLAGS.checkpoint:
            raise app.UsageError("--to_hf needs --checkpoint=DIR")
        load = (checkpoint.load_pretraining_model if checkpoint.is_pretraining_model(FLAGS.checkpoint)
                else checkpoint.load_model)
        hf.save_pretrained(load(FLAGS.checkpoint), FLAGS.output_dir)
    else:
        if not FLAGS.hf_dir:
            raise app.UsageError("give --hf_dir=DIR (or --to_hf --checkpoint=DIR)")
        checkpoint.save_model(hf.load_pretrained(FLAGS.hf_dir), FLAGS.output_dir)
    logging.info("wrote %s", FLAGS.output_dir)


if __name__ == "__main__":
    cli.run(main, outputs=["output_dir"])
