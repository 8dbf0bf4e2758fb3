"""A synthetic Mandarin-like corpus in the AISHELL-1 layout, deterministic by seed.

Made so that the science is visible: speaker sex sets the F0 register (~220 Hz vs
~110 Hz, jittered per speaker) and scales formants; each final has its own
formants; each tone its own F0 contour relative to the speaker's register (1 high
level, 2 rising, 3 dipping, 4 falling, 5 short neutral). Initials are bursts (b d),
fricative noise (s sh) or nasals (m n). Loudness, speaking rate and pauses vary.

Voicing is a sawtooth at the F0 contour shaped by a formant envelope in the
frequency domain (one FFT per segment): numpy only and fast.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import soundfile as sf

from w2v_jax.files import local_only
from w2v_jax.data import aishell
from w2v_jax.data.alignments import Interval, fill_gaps, write_textgrid

SAMPLE_RATE = 16000
# (F1, F2, F3) in Hz for a male voice; a diphthong glides from its first to its second target.
FORMANTS = {
    "a": [(850, 1250, 2800)], "o": [(550, 900, 2600)], "e": [(500, 1300, 2600)],
    "i": [(280, 2300, 3100)], "u": [(320, 750, 2500)], "ü": [(280, 1900, 2500)],
    "ai": [(850, 1250, 2800), (450, 2000, 2700)], "ao": [(850, 1250, 2800), (500, 850, 2600)],
}
INITIALS = ("b", "d", "s", "sh", "m", "n", "")
# Finals each initial combines with (pinyin phonotactics; s/sh + i would be apical).
COMBINATIONS = {
    "b": ("a", "o", "i", "u", "ai", "ao"), "d": ("a", "e", "i", "u", "ai", "ao"),
    "s": ("a", "e", "u", "ai", "ao"), "sh": ("a", "e", "u", "ai", "ao"),
    "m": ("a", "o", "i", "u", "ai", "ao"), "n": ("a", "e", "i", "u", "ü", "ai", "ao"),
    "": ("a", "o", "e", "i", "u", "ü", "ai", "ao"),
}
SYLLABLES = tuple((ini, fin) for ini in INITIALS for fin in COMBINATIONS[ini])
# Tone contours: semitones relative to the speaker's register at normalised times.
TONE_CONTOURS = {
    "1": ((0.0, 1.0), (4.0, 4.0)), "2": ((0.0, 1.0), (-1.0, 4.5)),
    "3": ((0.0, 0.5, 1.0), (-2.0, -6.0, -3.0)), "4": ((0.0, 1.0), (5.0, -5.0)),
    "5": ((0.0, 1.0), (0.0, -1.5)),
}
_ZERO_INITIAL_SPELLING = {"i": "yi", "u": "wu", "ü": "yu"}


@dataclasses.dataclass(frozen=True)
class Speaker:
    speaker: str  # folder name, S0001
    sex: str
    split: str
    f0: float  # register in Hz
    formant_scale: float


def spell(initial: str, final: str, tone: str) -> str:
    """Pinyin spelling of a syllable of the synthetic inventory."""
    body = initial + final if initial else _ZERO_INITIAL_SPELLING.get(final, final)
    return f"{body}{tone}"


def make_speakers(num_speakers: int, seed: int) -> list[Speaker]:
    """Alternating F/M speakers; dev and test each get a balanced slice of both sexes."""
    if num_speakers < 6:
        raise ValueError("need at least 6 speakers for both sexes in train, dev and test")
    held_out = 2 * max(1, round(num_speakers * 0.1 / 2))
    speakers = []
    for i in range(num_speakers):
        rng = np.random.default_rng([seed, i])
        sex = "F" if i % 2 == 0 else "M"
        split = "dev" if i < held_out else "test" if i < 2 * held_out else "train"
        f0 = (220.0 if sex == "F" else 110.0) * float(np.exp(rng.normal(0, 0.06)))
        scale = (1.15 if sex == "F" else 1.0) * float(rng.uniform(0.97, 1.03))
        speakers.append(Speaker(f"S{i + 1:04d}", sex, split, f0, scale))
    return speakers


# ------------------------------------------------------------------ sounds
def _envelope(freqs: np.ndarray, formants, scale: float) -> np.ndarray:
    """Sum of resonance peaks with bandwidths growing with frequency, plus a spectral tilt."""
    env = np.zeros_like(freqs)
    for k, f in enumerate(formants):
        f = f * scale
        bandwidth = 60.0 + 0.06 * f
        env += (0.6 ** k) / (1.0 + ((freqs - f) / (bandwidth / 2)) ** 2)
    return env


def _shape(signal: np.ndarray, envelope_of) -> np.ndarray:
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(len(signal), 1.0 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * envelope_of(freqs), len(signal))


def _fade(x: np.ndarray, samples: int = 80) -> np.ndarray:
    n = min(samples, len(x) // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return x * (peak / (np.abs(x).max() + 1e-9))


def _voiced(f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    phase = np.cumsum(f0 / SAMPLE_RATE) + rng.uniform()
    return 2.0 * (phase % 1.0) - 1.0 + 0.02 * rng.standard_normal(len(f0))


def _final(final: str, tone: str, n: int, speaker: Speaker, rng) -> np.ndarray:
    times, semitones = TONE_CONTOURS[tone]
    contour = np.interp(np.linspace(0, 1, n), times, semitones)
    f0 = speaker.f0 * 2.0 ** ((contour + rng.normal(0, 0.3)) / 12.0)
    source = _voiced(f0, rng)
    targets = FORMANTS[final]
    shaped = [_shape(source, lambda f, t=t: _envelope(f, t, speaker.formant_scale)) for t in targets]
    if len(shaped) == 1:
        out = shaped[0]
    else:
        glide = np.clip((np.linspace(0, 1, n) - 0.3) / 0.4, 0, 1)
        out = (1 - glide) * shaped[0] + glide * shaped[1]
    return _normalise(out, 1.0)


def _initial(initial: str, n: int, f0: float, speaker: Speaker, rng) -> np.ndarray:
    noise = rng.standard_normal(n)
    if initial in ("b", "d"):  # closure, then a burst in the last 15 ms
        burst = min(n, int(0.015 * SAMPLE_RATE))
        out = 0.01 * noise
        centre = 800.0 if initial == "b" else 4000.0
        out[-burst:] = _shape(noise[-burst:], lambda f: 1.0 / (1.0 + ((f - centre) / 1500.0) ** 2))
        out[-burst:] = _normalise(out[-burst:], 0.6)
        return out
    if initial in ("s", "sh"):
        centre, width = (6500.0, 1500.0) if initial == "s" else (3000.0, 900.0)
        return _normalise(_shape(noise, lambda f: 1.0 / (1.0 + ((f - centre) / width) ** 2)), 0.25)
    formants = (250, 1100, 2300) if initial == "m" else (250, 1600, 2600)
    source = _voiced(np.full(n, f0), rng)
    return _normalise(_shape(source, lambda f: _envelope(f, formants, speaker.formant_scale)), 0.3)


# ---------------------------------------------------------------- utterance
def synthesize_utterance(speaker: Speaker, rng: np.random.Generator):
    """Audio (float, [-1, 1]), words tier, phones tier, and the pinyin transcript."""
    rate = rng.uniform(0.8, 1.25)  # > 1 is faster speech
    gain = 10 ** (rng.uniform(-8, 2) / 20)
    pieces, words, phones, text = [], [], [], []
    t = 0

    def add(x: np.ndarray, label: str | None):
        nonlocal t
        pieces.append(x)
        if label is not None:
            phones.append(Interval(t / SAMPLE_RATE, (t + len(x)) / SAMPLE_RATE, label))
        t += len(x)

    def silence(seconds: float, label: str):
        add(np.zeros(int(seconds * SAMPLE_RATE)), label)

    silence(rng.uniform(0.1, 0.25), "sil")
    num_words = int(rng.integers(2, 5))
    for w in range(num_words):
        word_start, spelling = t, []
        for _ in range(int(rng.integers(1, 4))):
            initial, final = SYLLABLES[rng.integers(len(SYLLABLES))]
            tone = str(rng.choice(["1", "2", "3", "4", "5"], p=[0.22, 0.22, 0.22, 0.22, 0.12]))
            level = gain * 10 ** (rng.normal(0, 2) / 20)
            final_seconds = rng.uniform(0.14, 0.24) * (0.5 if tone == "5" else 1.0) / rate
            first_f0 = speaker.f0 * 2 ** (TONE_CONTOURS[tone][1][0] / 12)
            if initial:
                seconds = {"b": 0.05, "d": 0.05, "s": 0.11, "sh": 0.11}.get(initial, 0.07) / rate
                n = int(seconds * SAMPLE_RATE)
                add(_fade(_initial(initial, n, first_f0, speaker, rng) * 0.5 * level), initial)
            n = int(final_seconds * SAMPLE_RATE)
            add(_fade(_final(final, tone, n, speaker, rng) * 0.5 * level), final + tone)
            spelling.append(spell(initial, final, tone))
        words.append(Interval(word_start / SAMPLE_RATE, t / SAMPLE_RATE, "".join(spelling)))
        text.append("".join(spelling))
        if w < num_words - 1 and rng.uniform() < 0.7:
            silence(rng.uniform(0.06, 0.25) / rate, "sp")
    silence(rng.uniform(0.1, 0.25), "sil")
    audio = np.concatenate(pieces) + 0.001 * rng.standard_normal(t)
    return audio, fill_gaps(words, t / SAMPLE_RATE), phones, " ".join(text)


def make_corpus(out_dir: str | os.PathLike, *, num_speakers: int = 12,
                utterances_per_speaker: int = 20, seed: int = 0) -> list[Speaker]:
    """Write wavs, transcript, speaker.info and TextGrids (OUT/alignments) under out_dir."""
    out_dir = local_only(out_dir, "a generated corpus")
    speakers = make_speakers(num_speakers, seed)
    align_dir = os.path.join(out_dir, "alignments")
    transcript_lines = []
    for s_index, speaker in enumerate(speakers):
        wav_dir = os.path.join(out_dir, aishell.WAV_DIR, speaker.split, speaker.speaker)
        grid_dir = os.path.join(align_dir, speaker.speaker)
        os.makedirs(wav_dir, exist_ok=True)
        os.makedirs(grid_dir, exist_ok=True)
        for u in range(utterances_per_speaker):
            rng = np.random.default_rng([seed, s_index, u, 1])
            utt_id = f"SYN000{speaker.speaker}W{u + 1:04d}"
            audio, words, phones, text = synthesize_utterance(speaker, rng)
            pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
            sf.write(os.path.join(wav_dir, utt_id + ".wav"), pcm, SAMPLE_RATE, subtype="PCM_16")
            write_textgrid(os.path.join(grid_dir, utt_id + ".TextGrid"),
                           {"words": words, "phones": phones}, len(pcm) / SAMPLE_RATE)
            transcript_lines.append(f"{utt_id} {text}")
    for path, lines in (
            (os.path.join(out_dir, aishell.TRANSCRIPT), sorted(transcript_lines)),
            (os.path.join(out_dir, aishell.SPEAKER_INFO), [f"{s.speaker[1:]} {s.sex}" for s in speakers])):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return speakers
