"""The eSpeak NG corpus: exact alignments, labels, determinism, acoustics, the reader on it."""

import collections
import os

import numpy as np
import pytest
import soundfile as sf

from w2v_jax.data import aishell, espeak
from w2v_jax.data import labels as L
from w2v_jax.data.alignments import read_textgrid

SPEAKERS, UTTERANCES = 6, 3  # dev 2, test 2, train 2 speakers
_cache: dict = {}


def _make(path, workers):
    return espeak.make_corpus(path, speakers=SPEAKERS, utterances=UTTERANCES, seed=3,
                              workers=workers)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("espeak") / "corpus"
    _cache["summary"] = _make(path, workers=2)
    return str(path)


def _speech(intervals):
    return [iv for iv in intervals if iv.label]


def test_alignment_matches_the_synthesisers_events():
    """Every boundary of a known sentence lies within 10 ms of eSpeak's own phoneme events,
    taken here from a second synthesis of the same text with the same settings."""
    words = [espeak.Word("你好", ("ni3", "hao3"), ("ni2", "hao3")), None,
             espeak.Word("中国", ("zhong1", "guo2"), ("zhong1", "guo2")),
             espeak.Word("学生", ("xue2", "sheng5"), ("xue2", "sheng5"))]
    v = espeak.voice(3)
    rng = np.random.default_rng(0)
    spoken = espeak.say(words, v, rng)
    text, syllables, positions = espeak.spoken_text(words)
    assert text == "ni2 hao3 , zhong1 guo2 xue2 sheng5." == spoken.text
    _, events = espeak.engine().synthesize(text, v, rate=spoken.rate,
                                           pitch_range=spoken.pitch_range, random_seed=1)
    times = [(p, spoken.lead + sample / espeak.ESPEAK_RATE, name) for p, sample, name in events]
    phones = _speech(spoken.phones)
    assert [iv.label for iv in phones] == ["n", "i3", "h", "ao3", "zh", "ong1", "g", "uo2",
                                           "x", "üe2", "sh", "eng5"]
    k = 0
    for position in positions:
        starts = [t for p, t, name in times if p == position and not name.startswith("_")]
        after = min(t for _, t, _ in times if t > starts[-1])  # the syllable's end
        syllable = [phones[k], phones[k + 1]]  # every syllable here has an initial
        assert syllable[0].start == pytest.approx(starts[0], abs=0.010)
        assert syllable[1].start == pytest.approx(starts[1], abs=0.010)
        assert syllable[1].end == pytest.approx(after, abs=0.010)
        k += 2
    words_tier = _speech(spoken.words)
    assert [w.label for w in words_tier] == ["你好", "中国", "学生"]
    assert words_tier[0].start == phones[0].start and words_tier[-1].end == phones[-1].end
    # The signal agrees: silence before the first phone, speech inside the phones.
    lead = spoken.audio[:int(phones[0].start * espeak.SAMPLE_RATE)]
    inside = spoken.audio[int(phones[0].start * 16000):int(phones[-1].end * 16000)]
    assert np.abs(lead).max() < 1e-3 < np.sqrt(np.mean(inside ** 2))


def test_layout_splits_and_sexes(corpus):
    reader = aishell.Corpus(corpus)
    speakers = {split: sorted({u.speaker for u in reader.utterances(split)}) for split in aishell.SPLITS}
    assert speakers == {"dev": ["S0001", "S0002"], "test": ["S0003", "S0004"],
                        "train": ["S0005", "S0006"]}
    for split in aishell.SPLITS:  # both sexes everywhere, following the voice variant
        assert sorted(reader.sexes[s[1:]] for s in speakers[split]) == ["F", "M"]
    for s in range(SPEAKERS):
        v = espeak.voice(s)
        assert (v.variant in espeak.FEMALE_VARIANTS) == (reader.sexes[v.speaker[1:]] == "F")
    info = sf.info(reader.utterances("dev")[0].wav_path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert not os.path.exists(corpus + ".partial")


def test_labels_are_the_transcripts_pypinyin(corpus):
    from pypinyin import Style, lazy_pinyin
    reader = aishell.Corpus(corpus)
    for utt in reader.utterances("train"):
        words = utt.transcript.split()
        assert 4 <= sum(len(w) for w in words) <= 14
        expected = []
        for word in words:
            for syllable in lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True):
                parsed = L.parse_syllable(syllable)
                expected += ([parsed.initial] if parsed.initial else []) + [parsed.final + parsed.tone]
        grid = read_textgrid(reader.alignment(utt)[1])
        assert [iv.label for iv in grid if iv.label] == expected, utt.utt_id


def test_same_seed_same_bytes_whatever_the_workers(corpus, tmp_path):
    other = tmp_path / "again"
    _make(other, workers=1)
    files = sorted(os.path.relpath(os.path.join(d, f), corpus)
                   for d, _, fs in os.walk(corpus) for f in fs if f != espeak.SUMMARY_FILE)
    assert len(files) == 2 * SPEAKERS * UTTERANCES + 2
    for name in files:
        assert (other / name).read_bytes() == open(os.path.join(corpus, name), "rb").read(), name


def test_reader_takes_the_corpus_whole(corpus):
    from w2v_jax.models.config import Wav2Vec2Config
    reader, cfg, summary = aishell.Corpus(corpus), Wav2Vec2Config(), aishell.Summary()
    for split in aishell.SPLITS:
        examples = aishell.load_split(reader, split, cfg, strict=True, summary=summary)
        assert len(examples) == 2 * UTTERANCES
        for example in examples:
            tones = example["segments"]["tone"]
            assert (tones >= 0).sum() >= 4
    assert not summary.skipped


def test_voice_table_is_fixed_and_offsets_are_disjoint():
    a, b = espeak.voice_table(40), espeak.voice_table(40, first=40)
    assert len({(v.variant, v.pitch, v.range, v.rate, v.formant) for v in a + b}) == 80
    assert {v.speaker for v in a}.isdisjoint(v.speaker for v in b)
    assert [v.sex for v in a[:4]] == ["F", "M", "F", "M"]
    assert sum(v.sex == "F" for v in a) == 20
    assert len({v.variant for v in a}) == len(espeak.FEMALE_VARIANTS) + len(espeak.MALE_VARIANTS)
    assert espeak.voice(17) == espeak.voice_table(1, first=17)[0]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least 6 speakers"):
        espeak.make_corpus(tmp_path / "x", speakers=4, utterances=1, seed=0)
    with pytest.raises(ValueError, match="dev 2, test 5"):
        espeak.make_corpus(tmp_path / "x", speakers=8, utterances=1, seed=0, test_speakers=5)
    with pytest.raises(FileExistsError):
        espeak.make_corpus(tmp_path, speakers=6, utterances=1, seed=0)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_f0_shows_tones_and_sex(corpus):
    """librosa.pyin over the finals: tone 2 rises, tone 4 falls, women speak higher."""
    import librosa
    reader = aishell.Corpus(corpus)
    slopes, registers = collections.defaultdict(list), collections.defaultdict(list)
    for split in aishell.SPLITS:
        for utt in reader.utterances(split)[::2]:  # 9 of the 18 utterances: a few seconds
            audio, sr = sf.read(utt.wav_path)
            f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=450, sr=sr, frame_length=1024,
                                         hop_length=160, resolution=0.5)
            t = librosa.times_like(f0, sr=sr, hop_length=160)
            for iv in read_textgrid(reader.alignment(utt)[1]):
                if not iv.label[-1:].isdigit():
                    continue
                pitch = f0[(t >= iv.start) & (t < iv.end) & voiced]
                if len(pitch) < 6:
                    continue
                registers[reader.sex(utt)].append(np.median(pitch))
                third = len(pitch) // 3
                slopes[iv.label[-1]].append(12 * np.log2(np.median(pitch[-third:]) /
                                                         np.median(pitch[:third])))
    assert min(len(slopes["2"]), len(slopes["4"])) >= 5
    assert np.median(slopes["2"]) > 0.5 and np.median(slopes["4"]) < -0.5  # semitones
    assert np.median(registers["F"]) > 1.4 * np.median(registers["M"])


def test_noise_and_reverberation_leave_the_alignment():
    words = [espeak.Word("中国", ("zhong1", "guo2"), ("zhong1", "guo2")),
             espeak.Word("学生", ("xue2", "sheng5"), ("xue2", "sheng5"))]
    v = espeak.voice(0)
    clean = espeak.say(words, v, np.random.default_rng(5))
    noisy = espeak.say(words, v, np.random.default_rng(5),
                       espeak.Options(seed=0, noise_snr=10.0, reverb=1.0))
    # Same draws, so the same timing; eSpeak's carried-over state moves events by samples.
    assert [iv.label for iv in noisy.phones] == [iv.label for iv in clean.phones]
    for a, b in zip(noisy.phones + noisy.words, clean.phones + clean.words):
        assert (a.start, a.end) == pytest.approx((b.start, b.end), abs=0.002)
    lead = int(clean.lead * espeak.SAMPLE_RATE)
    speech, silence = noisy.audio[lead:], noisy.audio[:lead]
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(silence ** 2))
    assert 8 < snr < 22  # drawn from [10, 20] dB; the speech part holds noise and reverb too
    assert np.abs(clean.audio[:lead]).max() < 1e-3


def test_a_pretraining_record_names_the_voices_heard(corpus, tmp_path):
    """training.json's "corpus": which eSpeak voices a model was pre-trained on (None elsewhere)."""
    from w2v_jax.train.pretraining import generated_corpus

    assert generated_corpus(corpus) == {"generator": "espeak", "seed": 3,
                                        "speakers": list(range(SPEAKERS))}
    assert generated_corpus(str(tmp_path)) is None
