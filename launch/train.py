r"""Fine-tune wav2vec 2.0 frame-wise (phase 1: heads, phase 2: all but the CNN).

  python -m launch.train --config=configs/synthetic_tiny.py:tone --workdir=runs/demo
  python -m launch.train --config=configs/aishell_large.py:tone+sex --workdir=runs/tone_sex \
      --config.data.dir=data/aishell1 --config.init=hf:wav2vec2-large-lv60
  python -m launch.train --workdir=runs/tone_sex --export_backbone=models/tone_sex  # best step

Rerunning the same command resumes from the latest checkpoint in --workdir.
Multi-host: SLURM and TPU pods are detected; otherwise pass --coordinator_address,
--num_processes and --process_id to every process.
"""

from absl import app, flags

from launch import cli, multihost

cli.define_config(None, "Config file (configs/*.py:ARG).")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, exported backbone.",
                    required=True)
flags.DEFINE_string("export_backbone", None,
                    "Instead of training: write the backbone of --export_step to this model dir.")
flags.DEFINE_string("export_step", "best", "'best' (by the dev metric), 'latest' or a step number.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from w2v_jax.train import export_backbone, train

    if FLAGS.export_backbone:
        export_backbone(FLAGS.workdir, FLAGS.export_backbone, FLAGS.export_step)
        return
    if FLAGS.config is None:
        raise app.UsageError("--config=configs/FILE.py:ARG is required for training")
    multihost.initialize()
    summary = train(FLAGS.config, FLAGS.workdir)
    print(f"stopped at step {summary['step']}: {summary['stopped']}")


if __name__ == "__main__":
    cli.run(main, outputs=["workdir", "export_backbone"])
