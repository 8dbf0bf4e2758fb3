"""A many-voice Mandarin corpus spoken by eSpeak NG, with the synthesiser's own alignments.

    make_corpus(out, speakers=48, utterances=50, seed=0, workers=2)

writes the AISHELL-1 layout the reader takes (`aishell.Corpus`), TextGrids (tiers `words`
and `phones`, pinyin initials and toned finals, silence as empty intervals) under
OUT/alignments/SPK/, and OUT/espeak_corpus.json (voices, splits, counts, what was dropped).

How it is made:
- **Text.** Sentences of 4-14 syllables are strung from a frequency list of real words
  (`mandarin_words.tsv`, from jieba's dictionary) along simple part-of-speech patterns;
  words with rare finals are drawn more often so that every final of the inventory but
  `ê` (eSpeak cannot say it) occurs many times. Labels are the words' pypinyin TONE3
  readings (neutral tone 5), i.e. dictionary tones, as an MFA dictionary gives them.
- **What eSpeak is fed: pinyin with tone digits** (voice `cmn-latn-pinyin`), one word per
  syllable, so every syllable is said exactly as given and gets its own word position.
  Fed characters, eSpeak's own dictionary decides polyphones and applies 一/不 sandhi
  (never 3-3 sandhi, measured); fed pinyin it applies no sandhi at all. So the spoken
  tones are computed here: with `sandhi=True` (default) pypinyin's `tone_sandhi` rules
  inside each word (3-3 -> 2-3, 一 and 不) as a speaker would say them, while the labels
  keep the dictionary tone, exactly the mismatch real speech has against MFA labels.
- **Alignments are eSpeak's phoneme events** (`espeakEVENT_PHONEME`, with the output
  sample index of each phoneme's start): each phoneme event carries the text position
  of its syllable; a syllable with an initial must start with that initial's eSpeak
  phoneme (`INITIAL_PHONEMES`), whose event ends the initial and starts the final; the
  final ends at the next event (a pause, or the next syllable). Times are sample indices
  at eSpeak's 22,050 Hz divided by 22,050: exact, and unchanged by resampling to 16 kHz.
  A sentence whose events do not match its syllables is dropped and counted.
- **Voices.** `voice_table` enumerates speakers deterministically, independent of the
  seed: eSpeak voice variants (the sex follows the variant) crossed with base pitch,
  pitch range, rate and a formant scale (a variant file written at start-up with
  `formant` lines). Speaker k is always the same voice, so corpora made with
  `first_speaker` offsets share no speaker.
- **Per utterance:** rate, pitch range and gain jitter, leading/trailing silence,
  optional white noise at a given SNR and a simple exponential-decay room reverberation
  (the direct path at lag 0, so alignments stand). Each utterance has its own random
  generator from (seed, speaker, utterance), and eSpeak's own random seeds are reset per
  utterance, so the bytes do not depend on the number of workers.

eSpeak NG is not thread-safe: workers are processes, each with its own library state.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import dataclasses
import functools
import itertools
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from w2v_jax.data import aishell
from w2v_jax.data import labels as L
from w2v_jax.data.alignments import Interval, fill_gaps, write_textgrid
from w2v_jax.data.errors import DataError

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
WORDS_FILE = os.path.join(os.path.dirname(__file__), "mandarin_words.tsv")
SUMMARY_FILE = "espeak_corpus.json"
MIN_SYLLABLES, MAX_SYLLABLES = 4, 14

# eSpeak's phoneme for each pinyin initial (cmn phoneme table, checked on every syllable).
INITIAL_PHONEMES = {
    "b": "p", "p": "ph", "m": "m", "f": "f", "d": "t", "t": "th", "n": "n", "l": "l",
    "g": "k", "k": "kh", "h": "X", "j": "tS;", "q": "tS;h", "x": "S;",
    "zh": "ts.", "ch": "ts.h", "sh": "s.", "r": "z.", "z": "ts", "c": "tsh", "s": "s",
}
# Syllables eSpeak's pinyin reader does not know (it switches to English for them).
UNSPEAKABLE = frozenset({"jiong", "qiong", "xiong", "ê"})

# --------------------------------------------------------------------- voices
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Andrea", "Annie", "belinda", "linda",
                   "steph", "anika", "Alicia")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Lee", "Denis",
                 "victor")
PITCHES = (35, 45, 55, 65)        # espeakPITCH, 0-100 (50: the variant's own register)
RANGES = (45, 60, 75)             # espeakRANGE, 0-100 (0 would flatten the tones)
RATES = (170, 195, 220)           # espeakRATE, syllables per minute here
FORMANT_SCALES = (94, 100, 106)   # percent of the variant's F1-F3


@dataclasses.dataclass(frozen=True)
class Voice:
    index: int  # position in voice_table; the speaker folder is S{index + 1:04d}
    sex: str
    variant: str
    pitch: int
    range: int
    rate: int
    formant: int

    @property
    def speaker(self) -> str:
        return f"S{self.index + 1:04d}"


_SETTINGS = tuple(itertools.product(PITCHES, RANGES, RATES, FORMANT_SCALES))
# A fixed order of the settings so that neighbouring speakers differ in all of them.
_SETTINGS_ORDER = tuple(np.random.default_rng(20261202).permutation(len(_SETTINGS)).tolist())
MAX_SPEAKERS = 2 * min(len(FEMALE_VARIANTS), len(MALE_VARIANTS)) * len(_SETTINGS)


def voice(index: int) -> Voice:
    """Speaker `index` of the fixed enumeration: even F, odd M; variants cycle fastest."""
    if not 0 <= index < MAX_SPEAKERS:
        raise ValueError(f"speaker index {index} outside [0, {MAX_SPEAKERS})")
    sex = "F" if index % 2 == 0 else "M"
    variants = FEMALE_VARIANTS if sex == "F" else MALE_VARIANTS
    j = index // 2
    v = j % len(variants)
    pitch, range_, rate, formant = _SETTINGS[_SETTINGS_ORDER[(j // len(variants) + 7 * v) % len(_SETTINGS)]]
    return Voice(index, sex, variants[v], pitch, range_, rate, formant)


def voice_table(count: int, first: int = 0) -> list[Voice]:
    return [voice(i) for i in range(first, first + count)]


def assign_splits(voices: Sequence[Voice], dev: int, test: int) -> dict[str, list[Voice]]:
    """dev, then test, then train, in table order (which alternates F/M)."""
    if dev < 2 or test < 2 or len(voices) - dev - test < 2:
        raise ValueError(f"{len(voices)} speakers cannot give dev {dev}, test {test} and train "
                         "at least 2 each (both sexes in every split)")
    return {"dev": list(voices[:dev]), "test": list(voices[dev:dev + test]),
            "train": list(voices[dev + test:])}


def default_held_out(speakers: int) -> int:
    """Speakers per held-out split: 10% (even, at least 2)."""
    return max(2, 2 * round(speakers * 0.1 / 2))


# ----------------------------------------------------------------------- text
@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    pinyin: tuple[str, ...]  # dictionary TONE3 syllables, neutral tone 5 (the labels)
    spoken: tuple[str, ...]  # what eSpeak is told to say (sandhi applied or not)


# Part-of-speech classes of jieba's tags and sentence patterns over them.
_POS_CLASSES = {"N": ("n", "vn", "ng", "s", "f"), "V": ("v", "vg", "vn"), "A": ("a", "ad", "an", "ag"),
                "D": ("d",), "R": ("r",), "P": ("p",), "C": ("c",), "T": ("t",), "L": ("l", "i", "j"),
                "U": ("uj", "ul", "uz", "u", "y"), "E": ("e", "o")}
_PATTERNS = ("RDVN", "TRVAUN", "NVN", "RVUN", "NDA", "RPNVN", "CRDV", "ANVL", "RDVUAN", "NDVN",
             "ERDV", "NVE")


@functools.lru_cache(maxsize=None)
def _lexicon(sandhi: bool) -> tuple[dict[str, list[Word]], dict[str, np.ndarray]]:
    """Words per part-of-speech class and their sampling weights."""
    from pypinyin import Style, lazy_pinyin
    rows = []
    with open(WORDS_FILE, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            text, count, pos = line.rstrip("\n").split("\t")
            pinyin = tuple(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
            spoken = tuple(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True,
                                       tone_sandhi=True)) if sandhi else pinyin
            if (len(pinyin) != len(text) or len(spoken) != len(pinyin)
                    or any(s[:-1] in UNSPEAKABLE for s in pinyin + spoken)):
                continue
            finals = [L.parse_syllable(s).final for s in pinyin]
            rows.append((Word(text, pinyin, spoken), int(count), pos, finals))
    # Frequent words dominate less (count ** 0.5); words with finals that this weighting
    # leaves rare are boosted, so every final occurs many times in a few hundred sentences.
    mass = collections.Counter()
    for _, count, _, finals in rows:
        for final in finals:
            mass[final] += count ** 0.5
    typical = float(np.median(list(mass.values())))
    words: dict[str, list[Word]] = {}
    weights: dict[str, list[float]] = {}
    for word, count, pos, finals in rows:
        boost = max(1.0, max(min(100.0, typical / mass[f]) for f in finals))
        for cls, tags in _POS_CLASSES.items():
            if pos in tags:
                words.setdefault(cls, []).append(word)
                weights.setdefault(cls, []).append(count ** 0.5 * boost)
    return words, {cls: np.asarray(w) / np.sum(w) for cls, w in weights.items()}


def sentence(rng: np.random.Generator, sandhi: bool = True) -> list[Word | None]:
    """Words of one sentence (None marks a comma pause), 4-14 syllables in all."""
    words, weights = _lexicon(sandhi)
    target = int(rng.integers(MIN_SYLLABLES, MAX_SYLLABLES + 1))
    while True:
        out: list[Word | None] = []
        syllables = 0
        while syllables < target:
            if out:
                out.append(None)
            for cls in _PATTERNS[rng.integers(len(_PATTERNS))]:
                word = words[cls][rng.choice(len(words[cls]), p=weights[cls])]
                out.append(word)
                syllables += len(word.pinyin)
        if syllables <= MAX_SYLLABLES:
            return out
        # Too long: drop words from the end while it still has 4 syllables, else draw again.
        while out and sum(len(w.pinyin) for w in out if w) > MAX_SYLLABLES:
            out.pop()
        while out and out[-1] is None:
            out.pop()
        if sum(len(w.pinyin) for w in out if w) >= MIN_SYLLABLES:
            return out


# ------------------------------------------------------------------ the library
class _Event(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))
_AUDIO_OUTPUT_SYNCHRONOUS, _INITIALIZE_PHONEME_EVENTS = 2, 0x0001
_EVENT_PHONEME, _POS_CHARACTER, _CHARS_UTF8 = 7, 1, 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_LANGUAGE = "cmn-latn-pinyin"


class Engine:
    """One process's eSpeak NG: synthesises a text, returns its samples and phoneme events.

    Voice variants with a formant scale are written as variant files into a private copy
    of espeak-ng-data (links to the package's files), removed when the process exits.
    """

    def __init__(self):
        import atexit

        import espeakng_loader
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        source = espeakng_loader.get_data_path()
        self._root = tempfile.mkdtemp(prefix="w2v-espeak-")
        atexit.register(shutil.rmtree, self._root, True)
        self.data = os.path.join(self._root, "espeak-ng-data")
        self._variants = os.path.join(self.data, "voices", "!v")
        os.makedirs(self._variants)
        for name in os.listdir(source):
            if name != "voices":
                os.symlink(os.path.join(source, name), os.path.join(self.data, name))
        self._source_variants = os.path.join(source, "voices", "!v")
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data.encode(),
                                           _INITIALIZE_PHONEME_EVENTS)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG failed to start on {self.data} (returned {rate})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: eSpeak calls it later
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    def _collect(self, wav, count, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != 0:
            e = events[i]
            if e.type == _EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace")
                self._events.append((e.text_position, e.sample, name))
            i += 1
        return 0

    def _variant_name(self, v: Voice) -> str:
        name = f"w2v-{v.variant}-{v.formant}"
        path = os.path.join(self._variants, name)
        if not os.path.exists(path):
            source = os.path.join(self._source_variants, v.variant)
            with open(source, encoding="latin-1") as f:
                text = f.read()
            # Later lines win: these scale the variant's first three formants.
            text += "".join(f"\nformant {k} {v.formant} 100 100" for k in (1, 2, 3)) + "\n"
            with open(path + ".tmp", "w", encoding="latin-1") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
        return name

    def synthesize(self, text: str, v: Voice, *, rate: int, pitch_range: int,
                   random_seed: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
        """int16 samples at 22,050 Hz and (text position, sample, phoneme) events."""
        status = self._lib.espeak_SetVoiceByName(f"{_LANGUAGE}+{self._variant_name(v)}".encode())
        if status != 0:
            raise RuntimeError(f"eSpeak NG refused voice {v} (status {status})")
        for parameter, value in ((_RATE, rate), (_PITCH, v.pitch), (_RANGE, pitch_range),
                                 (_VOLUME, 100)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        # eSpeak's noise sources draw from its own generator and libc's rand().
        self._lib.espeak_ng_SetRandSeed(random_seed)
        self._libc.srand(random_seed)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
        if status != 0:
            raise RuntimeError(f"eSpeak NG failed on {text!r} (status {status})")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, self._events


@functools.lru_cache(maxsize=None)
def engine() -> Engine:
    """This process's engine (eSpeak keeps global state: one per process)."""
    return Engine()


# ------------------------------------------------------------------- alignment
class AlignmentMismatch(DataError):
    """eSpeak's phoneme events do not fit the syllables it was given."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Syllable:
    word: int
    pinyin: str   # dictionary reading (the label)
    spoken: str   # what eSpeak was told


def spoken_text(words: Sequence[Word | None]) -> tuple[str, list[Syllable], list[int]]:
    """The text eSpeak is fed, its syllables, and each syllable's 1-based text position."""
    parts, syllables, positions = [], [], []
    length = 0
    for w_index, word in enumerate(words):
        if word is None:
            parts.append(",")
            length += 2
            continue
        for pinyin, spoken in zip(word.pinyin, word.spoken):
            syllables.append(Syllable(w_index, pinyin, spoken))
            positions.append(length + 1)
            parts.append(spoken)
            length += len(spoken) + 1
    return " ".join(parts) + ".", syllables, positions


def align(syllables: Sequence[Syllable], positions: Sequence[int],
          events: Sequence[tuple[int, int, str]],
          num_samples: int) -> list[list[tuple[int, int, str]]]:
    """Per syllable, its phones (start sample, end sample, label) at eSpeak's rate.

    Labels are the dictionary initial and the final with its dictionary tone. Raises
    AlignmentMismatch when the events do not fit the syllables.
    """
    by_position = {p: i for i, p in enumerate(positions)}
    events = sorted(events, key=lambda e: e[1])
    # Per syllable, indices into `events` of its real (non-pause) phonemes.
    members: list[list[int]] = [[] for _ in syllables]
    for k, (position, _, name) in enumerate(events):
        if name.startswith("_"):
            continue  # a pause or a syllable boundary
        if name.startswith("(") or position not in by_position:
            raise AlignmentMismatch("phoneme outside every syllable",
                                    f"{name!r} at text position {position}")
        members[by_position[position]].append(k)
    phones = []
    for syllable, ks in zip(syllables, members):
        if not ks or ks != list(range(ks[0], ks[-1] + 1)):
            raise AlignmentMismatch("syllable without one run of phonemes", repr(syllable.spoken))
        parsed = L.parse_syllable(syllable.pinyin)
        start = events[ks[0]][1]
        end = events[ks[-1] + 1][1] if ks[-1] + 1 < len(events) else num_samples
        final_start = start
        if parsed.initial:
            expected = INITIAL_PHONEMES[parsed.initial]
            if events[ks[0]][2] != expected or len(ks) < 2:
                raise AlignmentMismatch("unexpected initial", f"{syllable.spoken!r} said as "
                                        f"{[events[k][2] for k in ks]}, expected {expected!r} first")
            final_start = events[ks[1]][1]
        if not start <= final_start < end or (parsed.initial and start == final_start):
            raise AlignmentMismatch("empty phone", repr(syllable.spoken))
        phones.append(([(start, final_start, parsed.initial)] if parsed.initial else []) +
                      [(final_start, end, parsed.final + parsed.tone)])
    return phones


# ------------------------------------------------------------------- utterance
@dataclasses.dataclass(frozen=True)
class Options:
    seed: int
    sandhi: bool = True
    noise_snr: float | None = None  # dB; None: no noise
    reverb: float = 0.0             # probability that an utterance is reverberated
    max_tries: int = 20             # sentences tried per utterance before giving up


def _reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise tail (RT60 0.2-0.6 s) after a unit direct path at lag 0."""
    from scipy.signal import fftconvolve
    rt60 = rng.uniform(0.2, 0.6)
    t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 10 ** (rng.uniform(-20, -12) / 20)
    response[0] = 1.0
    return fftconvolve(x, response)[:len(x)]


@dataclasses.dataclass
class Spoken:
    """One synthesised utterance and what eSpeak was told."""
    audio: np.ndarray            # float in [-1, 1] at 16 kHz
    words: list[Interval]        # TextGrid tiers, gaps filled with empty intervals
    phones: list[Interval]
    transcript: str              # words separated by spaces, as AISHELL writes them
    text: str                    # the pinyin eSpeak read
    rate: int                    # espeakRATE used
    pitch_range: int             # espeakRANGE used
    lead: float                  # seconds of silence before eSpeak's first sample
    drops: collections.Counter   # sentences eSpeak did not say as given, by reason


def synthesize_utterance(v: Voice, rng: np.random.Generator, options: Options) -> Spoken:
    """A sentence drawn from `rng`, spoken by `v`; sentences that eSpeak does not say as
    given are counted in `drops` and replaced by another."""
    drops = collections.Counter()
    for _ in range(options.max_tries):
        try:
            spoken = say(sentence(rng, options.sandhi), v, rng, options)
        except AlignmentMismatch as e:
            drops[e.reason] += 1
            continue
        spoken.drops = drops
        return spoken
    raise RuntimeError(f"eSpeak said none of {options.max_tries} sentences as given for {v}")


def say(words: Sequence[Word | None], v: Voice, rng: np.random.Generator,
        options: Options = Options(seed=0)) -> Spoken:
    """`words` spoken by `v` with this utterance's variation drawn from `rng`; raises
    AlignmentMismatch when eSpeak's phoneme events do not fit the syllables."""
    import soxr
    text, syllables, positions = spoken_text(words)
    rate = int(round(v.rate * rng.uniform(0.9, 1.1)))
    pitch_range = int(np.clip(v.range + rng.integers(-8, 9), 30, 100))
    raw, events = engine().synthesize(text, v, rate=rate, pitch_range=pitch_range,
                                      random_seed=int(rng.integers(1, 2 ** 31)))
    phones = align(syllables, positions, events, len(raw))
    lead, tail = (int(rng.uniform(0.1, 0.3) * SAMPLE_RATE) for _ in range(2))
    speech = soxr.resample(raw.astype(np.float32) / 32768.0, ESPEAK_RATE, SAMPLE_RATE, quality="HQ")
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    duration = len(audio) / SAMPLE_RATE
    offset = lead / SAMPLE_RATE

    def seconds(sample: int) -> float:
        return min(offset + sample / ESPEAK_RATE, duration)

    phone_tier, word_tier = [], []
    for w_index, word in enumerate(words):
        spans = [iv for syllable, syllable_phones in zip(syllables, phones) if syllable.word == w_index
                 for iv in syllable_phones]
        if word is None or not spans:
            continue
        phone_tier += [Interval(seconds(a), seconds(b), label) for a, b, label in spans]
        word_tier.append(Interval(seconds(spans[0][0]), seconds(spans[-1][1]), word.text))
    if options.reverb and rng.uniform() < options.reverb:
        audio = _reverberate(audio, rng)
    peak = np.abs(audio).max() + 1e-9
    audio = audio * (10 ** (rng.uniform(-9, -1) / 20) / peak)
    if options.noise_snr is not None:
        speech_power = np.mean(audio[lead:lead + len(speech)] ** 2)
        snr = rng.uniform(options.noise_snr, options.noise_snr + 10)
        audio = audio + rng.standard_normal(len(audio)) * np.sqrt(speech_power / 10 ** (snr / 10))
    transcript = " ".join(w.text for w in words if w is not None)
    return Spoken(audio, fill_gaps(word_tier, duration), fill_gaps(phone_tier, duration), transcript,
                  text, rate, pitch_range, offset, collections.Counter())


# ---------------------------------------------------------------------- corpus
def _utterance_id(v: Voice, u: int) -> str:
    return f"ESP000{v.speaker}W{u + 1:04d}"


def _write_utterance(staging: str, split: str, v: Voice, u: int, options: Options) -> dict[str, Any]:
    import soundfile as sf
    rng = np.random.default_rng([options.seed, v.index, u])
    spoken = synthesize_utterance(v, rng, options)
    pcm = np.clip(np.round(spoken.audio * 32767), -32768, 32767).astype(np.int16)
    utt_id = _utterance_id(v, u)
    sf.write(os.path.join(staging, aishell.WAV_DIR, split, v.speaker, utt_id + ".wav"), pcm,
             SAMPLE_RATE, subtype="PCM_16")
    write_textgrid(os.path.join(staging, "alignments", v.speaker, utt_id + ".TextGrid"),
                   {"words": spoken.words, "phones": spoken.phones}, len(pcm) / SAMPLE_RATE)
    finals = [iv.label for iv in spoken.phones if iv.label[-1:].isdigit()]
    return {"id": utt_id, "transcript": spoken.transcript, "seconds": len(pcm) / SAMPLE_RATE,
            "finals": collections.Counter(f[:-1] for f in finals),
            "tones": collections.Counter(f[-1] for f in finals), "dropped": spoken.drops}


def _write_speaker(staging: str, split: str, v: Voice, utterances: int,
                   options: Options) -> list[dict[str, Any]]:
    """One speaker's wavs and TextGrids; a record per utterance (run in a worker process).

    eSpeak carries state from one synthesis to the next (its waveform generator's phase:
    the same text comes out a few samples longer or shorter), so each utterance is
    synthesised in a child forked from this process, whose engine has been started but
    has never spoken: every utterance starts from the same state, whichever worker runs it.
    """
    import pickle
    for folder in (os.path.join(staging, aishell.WAV_DIR, split, v.speaker),
                   os.path.join(staging, "alignments", v.speaker)):
        os.makedirs(folder, exist_ok=True)
    import soundfile  # noqa: F401  (imported once here, not in every child)
    import soxr  # noqa: F401
    engine()._variant_name(v)
    _lexicon(options.sandhi)
    records = []
    for u in range(utterances):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: speak, write, report, exit without cleanup handlers
            status = 1
            try:
                os.close(read_end)
                with os.fdopen(write_end, "wb") as pipe:
                    pickle.dump(_write_utterance(staging, split, v, u, options), pipe)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not payload:
            raise RuntimeError(f"synthesis of {_utterance_id(v, u)} ({v}) failed "
                               f"(child exit status {status})")
        records.append(pickle.loads(payload))
    return records


def make_corpus(out_dir: str | os.PathLike, *, speakers: int = 48, utterances: int = 40,
                seed: int = 0, workers: int | None = None, first_speaker: int = 0,
                dev_speakers: int | None = None, test_speakers: int | None = None,
                sandhi: bool = True, noise_snr: float | None = None, reverb: float = 0.0,
                progress: bool = False) -> dict[str, Any]:
    """Write an eSpeak corpus to `out_dir` (which must not exist) and return its summary.

    Speakers are `voice_table(speakers, first_speaker)`; dev and test take the first
    `dev_speakers` and `test_speakers` of them (10% each by default), train the rest.
    The corpus is built in OUT.partial and renamed when whole. Same arguments, same bytes,
    whatever `workers` is (default: all CPUs).
    """
    from tqdm import tqdm

    from w2v_jax.files import local_only, write_json
    out_dir = local_only(out_dir, "a generated corpus")
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; the corpus is written to a new folder")
    if speakers < 6 or utterances < 1:
        raise ValueError(f"need at least 6 speakers (both sexes in train, dev and test) and 1 "
                         f"utterance each, got speakers={speakers}, utterances={utterances}")
    if not 0 <= first_speaker <= MAX_SPEAKERS - speakers:
        raise ValueError(f"speakers {first_speaker}..{first_speaker + speakers - 1} exceed the "
                         f"{MAX_SPEAKERS} voices of the table")
    if not 0 <= reverb <= 1:
        raise ValueError(f"reverb is a probability in [0, 1], got {reverb}")
    held_out = default_held_out(speakers)
    splits = assign_splits(voice_table(speakers, first_speaker),
                           held_out if dev_speakers is None else dev_speakers,
                           held_out if test_speakers is None else test_speakers)
    options = Options(seed=seed, sandhi=sandhi, noise_snr=noise_snr, reverb=reverb)
    staging = out_dir + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    jobs = [(split, v) for split, voices in splits.items() for v in voices]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    started = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {}
    # spawn: the caller may have started threads (JAX) that a fork would copy half-way.
    with concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_write_speaker, staging, split, v, utterances, options): v
                   for split, v in jobs}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                           desc="speakers", unit="spk", disable=not progress):
            records[futures[future].speaker] = future.result()
    elapsed = time.perf_counter() - started
    ordered = [r for _, v in jobs for r in records[v.speaker]]
    for path, lines in (
            (aishell.TRANSCRIPT, sorted(f"{r['id']} {r['transcript']}" for r in ordered)),
            (aishell.SPEAKER_INFO, [f"{v.speaker[1:]} {v.sex}" for _, v in jobs])):
        os.makedirs(os.path.dirname(os.path.join(staging, path)), exist_ok=True)
        with open(os.path.join(staging, path), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    total = lambda key: sum((r[key] for r in ordered), collections.Counter())  # noqa: E731
    seconds = sum(r["seconds"] for r in ordered)
    summary = {
        "seed": seed, "sandhi": sandhi, "noise_snr": noise_snr, "reverb": reverb,
        "speakers": {split: [dataclasses.asdict(v) | {"speaker": v.speaker} for v in voices]
                     for split, voices in splits.items()},
        "utterances": len(ordered), "hours": seconds / 3600,
        "finals": dict(sorted(total("finals").items())), "tones": dict(sorted(total("tones").items())),
        "dropped_sentences": dict(total("dropped")),
        "workers": workers, "generation_seconds": elapsed,
    }
    write_json(os.path.join(staging, SUMMARY_FILE), summary)
    os.replace(staging, out_dir)
    return summary
