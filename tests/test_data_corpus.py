"""The AISHELL-1 reader on the synthetic corpus, and bad input of every kind."""

import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from tests.data_fixtures import cfg, synthetic_corpus  # noqa: F401  (session fixtures)

from w2v_jax.data import aishell, audio, synthetic
from w2v_jax.data.alignments import Interval, read_textgrid, write_textgrid
from w2v_jax.data.errors import DataError


def test_synthetic_layout_and_splits(synthetic_corpus):
    corpus = aishell.Corpus(synthetic_corpus)
    assert corpus.sexes == {"0001": "F", "0002": "M", "0003": "F", "0004": "M", "0005": "F", "0006": "M"}
    speakers = {split: sorted({u.speaker for u in corpus.utterances(split)}) for split in aishell.SPLITS}
    assert speakers == {"dev": ["S0001", "S0002"], "test": ["S0003", "S0004"], "train": ["S0005", "S0006"]}
    utts = corpus.utterances("train")
    assert [u.utt_id for u in utts[:2]] == ["SYN000S0005W0001", "SYN000S0005W0002"]
    assert utts[0].transcript  # the transcript file was read


def test_synthetic_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        synthetic.make_corpus(path, num_speakers=6, utterances_per_speaker=1, seed=7)
    wav = os.path.join(aishell.WAV_DIR, "train", "S0005", "SYN000S0005W0001.wav")
    assert (a / wav).read_bytes() == (b / wav).read_bytes()


def test_synthetic_f0_registers_differ_by_sex():
    speakers = synthetic.make_speakers(12, seed=0)
    female = [s.f0 for s in speakers if s.sex == "F"]
    male = [s.f0 for s in speakers if s.sex == "M"]
    assert 180 < min(female) and max(female) < 270 and 90 < min(male) and max(male) < 135
    for split in aishell.SPLITS:
        assert {s.sex for s in speakers if s.split == split} == {"F", "M"}


def test_example_labels_follow_the_textgrid(synthetic_corpus, cfg):
    corpus = aishell.Corpus(synthetic_corpus)
    utt = corpus.utterances("dev")[0]  # speaker S0001, female
    example = aishell.load_example(corpus, utt, cfg)
    assert example["audio"].dtype == np.int16 and example["sex"] == "F"
    n_frames = cfg.num_frames(len(example["audio"]))
    assert all(len(v) == n_frames for v in example["frames"].values())
    speech = [iv for iv in read_textgrid(os.path.join(synthetic_corpus, "alignments", "S0001",
                                                      utt.utt_id + ".TextGrid"))
              if iv.label not in ("", "sil", "sp")]
    segments = example["segments"]
    assert len(segments["frame"]) == len(speech)
    for k, iv in enumerate(speech):
        tone = iv.label[-1] if iv.label[-1].isdigit() else None
        assert segments["tone"][k] == (int(tone) - 1 if tone else -1)
        # The central frame's centre lies inside the segment for these (>= 50 ms) segments.
        assert iv.start <= cfg.frame_center_seconds(segments["frame"][k]) < iv.end
        assert example["frames"]["phone"][segments["frame"][k]] == segments["phone"][k]
    assert set(example["frames"]["sex"].tolist()) == {-1, 0}


# ------------------------------------------------------------------ bad input
def _write(path, samples, rate=16000, channels=1):
    data = np.zeros((samples, channels), np.int16) if channels > 1 else np.zeros(samples, np.int16)
    sf.write(path, data, rate, subtype="PCM_16")


def test_corrupt_and_empty_wav(tmp_path):
    corrupt = tmp_path / "CORRUPT.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(DataError, match="CORRUPT.wav: cannot read audio"):
        audio.read_wav(corrupt)
    empty = tmp_path / "EMPTY.wav"
    _write(empty, 0)
    with pytest.raises(DataError, match="EMPTY.wav: audio is empty"):
        audio.read_wav(empty)


def test_other_rate_resampled_or_refused(tmp_path):
    path = tmp_path / "RATE8K.wav"
    t = np.arange(8000) / 8000
    sf.write(path, (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), 8000)
    with pytest.raises(DataError, match="RATE8K.wav: sample rate 8000 Hz.*resampling disabled"):
        audio.read_wav(path, resample=False)
    resampled = audio.read_wav(path)
    assert resampled.dtype == np.int16 and len(resampled) == 16000
    peak = np.abs(np.fft.rfft(resampled.astype(float))).argmax()  # 1 s at 16 kHz: bin = Hz
    assert abs(peak - 440) <= 1


def test_stereo_mixed_to_mono(tmp_path):
    path = tmp_path / "ST.wav"
    sf.write(path, np.stack([np.full(400, 1000), np.full(400, 3000)], 1).astype(np.int16), 16000)
    assert audio.read_wav(path).tolist() == [2000] * 400


@pytest.fixture
def damaged_corpus(tmp_path, synthetic_corpus):
    """A copy of the synthetic corpus with one of each utterance-level problem."""
    root = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, root)
    wav = root / aishell.WAV_DIR / "train"
    (wav / "S0005" / "SYN000S0005W0001.wav").write_bytes(b"not a wav")            # bad audio
    os.remove(root / "alignments" / "S0005" / "SYN000S0005W0002.TextGrid")        # no alignment
    grid = root / "alignments" / "S0005" / "SYN000S0005W0003.TextGrid"            # unknown phone
    grid.write_text(grid.read_text().replace('text = "sil"', 'text = "qq1"', 1))
    shutil.copytree(wav / "S0006", wav / "S0999")                                  # no speaker.info entry
    for name in os.listdir(wav / "S0999")[1:]:
        os.remove(wav / "S0999" / name)
    return root


def test_bad_utterances_skipped_and_counted(damaged_corpus, cfg):
    corpus = aishell.Corpus(damaged_corpus)
    summary = aishell.Summary()
    kept = aishell.load_split(corpus, "train", cfg, summary=summary)
    assert len(kept) == 8 - 3  # 2 speakers x 4 utterances, 3 damaged; S0999 skipped too
    assert dict(summary.skipped) == {aishell.BAD_AUDIO: 1, aishell.NO_ALIGNMENT: 1,
                                     aishell.BAD_ALIGNMENT: 1, aishell.SPEAKER_MISSING: 1}
    report = summary.report()
    assert "skipped: 4" in report and "SYN000S0005W0001.wav" in report and "'qq1'" in report


def test_strict_raises_on_the_first_bad_utterance(damaged_corpus, cfg):
    corpus = aishell.Corpus(damaged_corpus)
    with pytest.raises(DataError, match="SYN000S0005W0001.wav: cannot read audio"):
        aishell.load_split(corpus, "train", cfg, strict=True)


def test_missing_speaker_message(damaged_corpus, cfg):
    corpus = aishell.Corpus(damaged_corpus)
    utt = [u for u in corpus.utterances("train") if u.speaker == "S0999"][0]
    with pytest.raises(DataError, match="speaker S0999 is missing from .*speaker.info"):
        aishell.load_example(corpus, utt, cfg)


def test_missing_corpus_parts(tmp_path):
    with pytest.raises(DataError, match="data_aishell/wav: not found"):
        aishell.Corpus(tmp_path)


def test_phone_without_a_frame_of_its_own_is_left_out_and_counted(tmp_path, synthetic_corpus, cfg):
    """A 4 ms phone inserted into a final: its central frame is the final's, so the segment
    table leaves it out, the reader counts it, and every other row is unchanged."""
    root = tmp_path / "corpus"
    shutil.copytree(synthetic_corpus, root)
    corpus = aishell.Corpus(root)
    utt = corpus.utterances("dev")[0]
    before = aishell.load_example(corpus, utt, cfg)["segments"]
    path = root / "alignments" / utt.speaker / (utt.utt_id + ".TextGrid")
    phones = read_textgrid(path)
    k = next(i for i, iv in enumerate(phones) if iv.label[-1:].isdigit() and iv.end - iv.start > 0.1)
    final = phones[k]
    cut = round(final.end - 0.004, 6)  # a 4 ms initial at the final's end
    phones[k:k + 1] = [Interval(final.start, cut, final.label), Interval(cut, final.end, "d")]
    write_textgrid(path, {"phones": phones}, phones[-1].end)
    corpus, summary = aishell.Corpus(root), aishell.Summary()
    after = aishell.load_example(corpus, utt, cfg, summary=summary)["segments"]
    assert summary.short_segments == 1
    assert after["frame"].tolist() == before["frame"].tolist()
    assert after["initial"].tolist() == before["initial"].tolist()
    assert "segments without a frame of their own (left out): 1" in summary.report()
