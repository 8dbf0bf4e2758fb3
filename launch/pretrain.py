r"""Pre-train wav2vec 2.0 (fairseq's contrastive objective) on unlabelled 16 kHz audio.

  python -m launch.pretrain --config=configs/pretrain_small.py --workdir=/tmp/w2v-jax/pretrain \
      --config.data.dir=/tmp/w2v-jax/corpus
  python -m launch.pretrain --workdir=/tmp/w2v-jax/pretrain --export_model=/tmp/w2v-jax/small --export_step=best

--config.data.dir is any folder of wav/flac files (recursive) or an AISHELL-layout corpus (its
train split; its dev split for evaluation). A finished run exports WORKDIR/model: the backbone
with its quantizer and projections (launch.convert --to_hf turns it into a transformers
Wav2Vec2ForPreTraining; --config.init=model:WORKDIR/model fine-tunes it).
Rerunning the same command resumes from the latest checkpoint in --workdir.
Multi-host: SLURM and TPU pods are detected; otherwise pass --coordinator_address,
--num_processes and --process_id to every process.
"""

from absl import app, flags

from launch import cli, multihost

cli.define_config(None, "Config file (configs/pretrain_*.py).")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, exported model.",
                    required=True)
flags.DEFINE_string("export_model", None,
                    "Instead of training: write checkpoint --export_step as a model dir here.")
flags.DEFINE_string("export_step", "best", "'best' (by the dev loss), 'latest' or a step number.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax.train.pretraining import export_model, run_pretraining

    if FLAGS.export_model:
        export_model(FLAGS.workdir, FLAGS.export_model, FLAGS.export_step)
        return
    if FLAGS.config is None:
        raise app.UsageError("--config=configs/pretrain_small.py is required for training")
    multihost.initialize()
    summary = run_pretraining(FLAGS.config, FLAGS.workdir)
    print(f"stopped at step {summary['step']}: {summary['stopped']}")


if __name__ == "__main__":
    cli.run(main, outputs=["workdir", "export_model"])
