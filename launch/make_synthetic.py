"""Write the synthetic corpus in the AISHELL-1 layout (TextGrids under OUT/alignments).

  python -m launch.make_synthetic --out=DIR --speakers=12 --utterances=20 [--seed=0]
"""

from absl import flags, logging

from launch import cli
from w2v_jax.data import synthetic

flags.DEFINE_string("out", None, "Output corpus folder.")
flags.DEFINE_integer("speakers", 12, "Speakers (alternating F/M): both sexes in each split.",
                     lower_bound=6)
flags.DEFINE_integer("utterances", 20, "Utterances per speaker.")
flags.DEFINE_integer("seed", 0, "Random seed: same seed, same corpus.")
flags.mark_flag_as_required("out")


def main(argv):
    del argv
    f = flags.FLAGS
    speakers = synthetic.make_corpus(f.out, num_speakers=f.speakers,
                                     utterances_per_speaker=f.utterances, seed=f.seed)
    for split in ("train", "dev", "test"):
        chosen = [s for s in speakers if s.split == split]
        logging.info("%s: %d speakers (%d F, %d M)", split, len(chosen),
                     sum(s.sex == "F" for s in chosen), sum(s.sex == "M" for s in chosen))
    print(f"wrote {len(speakers)} speakers x {f.utterances} utterances to {f.out}")


if __name__ == "__main__":
    cli.run(main, outputs=["out"])
