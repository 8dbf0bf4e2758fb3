"""Prepare the `aishell1` TFDS dataset (array_record) from an AISHELL-1-layout corpus.

  python -m launch.prepare_data --corpus_dir=CORPUS --alignments_dir=ALIGN --data_dir=DATA [--strict]
"""

import contextlib
import io

from absl import flags

from launch import cli
from w2v_jax.data import tfds_aishell1

flags.DEFINE_string("corpus_dir", None, "Folder holding data_aishell/ and resource_aishell/.")
flags.DEFINE_string("alignments_dir", None, "TextGrids or CTMs (default: CORPUS/alignments).")
flags.DEFINE_string("data_dir", None, "TFDS data dir to write.")
flags.DEFINE_bool("strict", False, "Fail on the first bad utterance instead of skipping it.")
flags.DEFINE_bool("resample", True, "Resample audio at other rates to 16 kHz (else an error).")
flags.DEFINE_string("preset", "base", "Wav2Vec2Config preset whose frame geometry labels use.")
flags.mark_flags_as_required(["corpus_dir", "data_dir"])
cli.existing_dirs("corpus_dir", "alignments_dir")


def main(argv):
    del argv
    from w2v_jax.models.config import Wav2Vec2Config
    f = flags.FLAGS
    # TFDS prints "Downloading and preparing dataset..." even for this local build; our summary says it
    with contextlib.redirect_stdout(io.StringIO()):
        summary = tfds_aishell1.prepare(f.corpus_dir, f.data_dir, alignments_dir=f.alignments_dir,
                                        cfg=Wav2Vec2Config.preset(f.preset), strict=f.strict,
                                        resample=f.resample)
    print(summary.report())


if __name__ == "__main__":
    cli.run(main, outputs=["data_dir"])
