"""Write an eSpeak NG Mandarin corpus (AISHELL-1 layout, TextGrids under OUT/alignments).

  python -m launch.make_corpus --out=DIR --speakers=N --utterances=M --seed=S [--workers=2]
      [--first_speaker=K] [--dev_speakers=D] [--test_speakers=T] [--noise_snr=DB] [--reverb=P]

Speaker k is always the same voice (w2v_jax.data.espeak.voice_table): a corpus made with
--first_speaker past another corpus's speakers shares none of them.
"""

from absl import app, flags

from w2v_jax.data import espeak

flags.DEFINE_string("out", None, "Output corpus folder (must not exist).")
flags.DEFINE_integer("speakers", 48, "Speakers (alternating F/M; at least 6).")
flags.DEFINE_integer("utterances", 40, "Utterances per speaker (about 3 s each).")
flags.DEFINE_integer("seed", 0, "Random seed: same seed and flags, same bytes.")
flags.DEFINE_integer("workers", None, "Worker processes (default: all CPUs).")
flags.DEFINE_integer("first_speaker", 0, "Index of the first speaker in the voice table.")
flags.DEFINE_integer("dev_speakers", None, "Dev speakers (default 10%, at least 2).")
flags.DEFINE_integer("test_speakers", None, "Test speakers (default 10%, at least 2).")
flags.DEFINE_float("noise_snr", None, "Add white noise at an SNR drawn from [DB, DB + 10] dB.")
flags.DEFINE_float("reverb", 0.0, "Probability that an utterance gets room reverberation.")
flags.DEFINE_bool("sandhi", True, "Speak tone sandhi inside words (labels keep dictionary tones).")
flags.mark_flag_as_required("out")


def main(argv):
    del argv
    f = flags.FLAGS
    try:
        summary = espeak.make_corpus(
            f.out, speakers=f.speakers, utterances=f.utterances, seed=f.seed, workers=f.workers,
            first_speaker=f.first_speaker, dev_speakers=f.dev_speakers,
            test_speakers=f.test_speakers, sandhi=f.sandhi, noise_snr=f.noise_snr,
            reverb=f.reverb, progress=True)
    except (ValueError, FileExistsError) as e:
        raise app.UsageError(str(e)) from None
    for split, voices in summary["speakers"].items():
        print(f"{split}: {len(voices)} speakers ({sum(v['sex'] == 'F' for v in voices)} F, "
              f"{sum(v['sex'] == 'M' for v in voices)} M)")
    print(f"wrote {summary['utterances']} utterances, {summary['hours']:.2f} h, to {f.out} in "
          f"{summary['generation_seconds']:.0f} s; dropped sentences: "
          f"{summary['dropped_sentences'] or 'none'}")


if __name__ == "__main__":
    app.run(main)
