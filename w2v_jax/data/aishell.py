"""Reader of the AISHELL-1 layout (the real corpus and the synthetic one).

    CORPUS/data_aishell/wav/{train,dev,test}/SPK/UTT.wav
    CORPUS/data_aishell/transcript/aishell_transcript_v0.8.txt
    CORPUS/resource_aishell/speaker.info        lines "0002 F"
    ALIGNMENTS/**/UTT.TextGrid  (MFA mirrors speaker folders) or ALIGNMENTS/*.ctm

Speaker folders are named S0002 while speaker.info says 0002: both are reduced to
the digits. Splits are the corpus's own (speaker-disjoint) train/dev/test.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from typing import Any, Iterator

from absl import logging
from tqdm import tqdm

from w2v_jax.data import alignments as A
from w2v_jax.data import audio as audio_lib
from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError
from w2v_jax.files import local_only

SPLITS = ("train", "dev", "test")
WAV_DIR = os.path.join("data_aishell", "wav")
TRANSCRIPT = os.path.join("data_aishell", "transcript", "aishell_transcript_v0.8.txt")
SPEAKER_INFO = os.path.join("resource_aishell", "speaker.info")


def speaker_key(speaker: str) -> str:
    """'S0002' and '0002' name the same speaker."""
    return speaker[1:] if speaker[:1] in ("S", "s") and speaker[1:].isdigit() else speaker


@dataclasses.dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str  # folder name, e.g. S0002
    split: str
    wav_path: str
    transcript: str


def read_speaker_info(path: str) -> dict[str, str]:
    """speaker key -> 'F' or 'M'."""
    if not os.path.exists(path):
        raise DataError(f"{path}: speaker table not found")
    sexes = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[1].upper() not in L.SEXES:
                raise DataError(f"{path}:{line_no}: expected 'SPEAKER F|M', got {line.strip()!r}")
            sexes[speaker_key(fields[0])] = fields[1].upper()
    return sexes


def read_transcripts(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        logging.warning("%s: transcript file not found; transcripts left empty", path)
        return {}
    with open(path, encoding="utf-8") as f:
        return {utt: text.strip() for utt, _, text in (line.strip().partition(" ") for line in f) if utt}


class Corpus:
    """An AISHELL-1-layout corpus with its alignments (TextGrids and/or CTMs)."""

    def __init__(self, corpus_dir: str | os.PathLike, alignments_dir: str | os.PathLike | None = None):
        self.corpus_dir = local_only(corpus_dir, "an AISHELL-1-layout corpus")
        self.alignments_dir = local_only(alignments_dir or os.path.join(self.corpus_dir, "alignments"),
                                         "an alignment folder")
        wav_root = os.path.join(self.corpus_dir, WAV_DIR)
        if not os.path.isdir(wav_root):
            raise DataError(f"{wav_root}: not found; is {self.corpus_dir} an AISHELL-1 corpus root?")
        self.sexes = read_speaker_info(os.path.join(self.corpus_dir, SPEAKER_INFO))
        self.transcripts = read_transcripts(os.path.join(self.corpus_dir, TRANSCRIPT))
        self._textgrids, self._ctm = self._index_alignments()
        self._check_speakers_disjoint()

    def _index_alignments(self) -> tuple[dict[str, str], dict[str, list[A.Interval]]]:
        if not os.path.isdir(self.alignments_dir):
            raise DataError(f"{self.alignments_dir}: alignment folder not found")
        textgrids, ctm = {}, {}
        for root, _, files in os.walk(self.alignments_dir):
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext == ".TextGrid":
                    textgrids[stem] = os.path.join(root, name)
                elif ext == ".ctm":
                    ctm.update(A.read_ctm(os.path.join(root, name)))
        return textgrids, ctm

    def _check_speakers_disjoint(self) -> None:
        seen: dict[str, str] = {}
        for split in SPLITS:
            for speaker in self._speakers(split):
                if speaker in seen:
                    raise DataError(f"speaker {speaker} is in both {seen[speaker]} and {split} "
                                    f"under {os.path.join(self.corpus_dir, WAV_DIR)}")
                seen[speaker] = split

    def _speakers(self, split: str) -> list[str]:
        split_dir = os.path.join(self.corpus_dir, WAV_DIR, split)
        if not os.path.isdir(split_dir):
            return []
        return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))

    def utterances(self, split: str) -> list[Utterance]:
        """Every wav of a split, sorted by speaker then utterance id."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        out = []
        for speaker in self._speakers(split):
            speaker_dir = os.path.join(self.corpus_dir, WAV_DIR, split, speaker)
            for name in sorted(os.listdir(speaker_dir)):
                utt_id, ext = os.path.splitext(name)
                if ext.lower() == ".wav":
                    out.append(Utterance(utt_id, speaker, split, os.path.join(speaker_dir, name),
                                         self.transcripts.get(utt_id, "")))
        return out

    def sex(self, utt: Utterance) -> str:
        try:
            return self.sexes[speaker_key(utt.speaker)]
        except KeyError:
            raise DataError(f"{utt.wav_path}: speaker {utt.speaker} is missing from "
                            f"{os.path.join(self.corpus_dir, SPEAKER_INFO)}") from None

    def alignment(self, utt: Utterance) -> tuple[list[A.Interval], str]:
        """The utterance's phone intervals and the file they came from."""
        if utt.utt_id in self._textgrids:
            path = self._textgrids[utt.utt_id]
            return A.read_textgrid(path), path
        if utt.utt_id in self._ctm:
            return self._ctm[utt.utt_id], f"{self.alignments_dir} (CTM, {utt.utt_id})"
        raise DataError(f"{utt.wav_path}: no alignment for {utt.utt_id} in {self.alignments_dir}")


# Which step failed decides the reason counted in the summary.
SPEAKER_MISSING, NO_ALIGNMENT, BAD_AUDIO, BAD_ALIGNMENT = (
    "speaker missing from speaker.info", "no alignment", "bad audio", "bad alignment")


@contextlib.contextmanager
def _reason(reason: str):
    try:
        yield
    except DataError as e:
        e.reason = reason
        raise


def load_example(corpus: Corpus, utt: Utterance, cfg, *, resample: bool = True,
                 summary: "Summary | None" = None) -> dict[str, Any]:
    """One labelled utterance: int16 audio, frame labels per task, its segment table.

    Keys: id, speaker, sex, transcript, audio (S,) int16; frames: {task: (T,) int32}
    with T = cfg.num_frames(S); segments: {start, end: (K,) float32 seconds,
    frame: (K,) int32 central frames, task: (K,) int32}.
    A DataError raised here has a `reason` attribute (one of the four above). Segments
    without a central frame of their own are left out and counted in `summary`.
    """
    with _reason(SPEAKER_MISSING):
        sex = corpus.sex(utt)
    with _reason(NO_ALIGNMENT):
        intervals, source = corpus.alignment(utt)
    with _reason(BAD_AUDIO):
        audio = audio_lib.read_wav(utt.wav_path, resample=resample)
        num_frames = int(cfg.num_frames(len(audio)))
        if num_frames < 1:
            raise DataError(f"{utt.wav_path}: {len(audio)} samples is shorter than one frame")
    sample_rate = audio_lib.SAMPLE_RATE
    with _reason(BAD_ALIGNMENT):
        segments = A.phone_segments(intervals, duration=len(audio) / sample_rate,
                                    frame_seconds=cfg.frame_stride / sample_rate, source=source)
        if not segments:
            raise DataError(f"{source}: no speech segments")
        columns = A.segment_columns(segments, sex, num_frames, cfg, sample_rate)
        if not len(columns["frame"]):
            raise DataError(f"{source}: no segment owns a frame")
    if summary is not None:
        summary.short_segments += len(segments) - len(columns["frame"])
    return {"id": utt.utt_id, "speaker": utt.speaker, "sex": sex, "transcript": utt.transcript,
            "audio": audio, "frames": A.frame_labels(segments, sex, num_frames, cfg, sample_rate),
            "segments": columns}


@dataclasses.dataclass
class Summary:
    """What a pass over the corpus kept and skipped, and why."""
    kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    short_segments: int = 0  # segments left out: their central frame is a neighbour's

    def skip(self, reason: str, error: Exception) -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(str(error))

    def report(self) -> str:
        lines = ["kept: " + (", ".join(f"{s} {n}" for s, n in sorted(self.kept.items())) or "none"),
                 f"segments without a frame of their own (left out): {self.short_segments}",
                 f"skipped: {sum(self.skipped.values())}"]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  {reason}: {n}")
            lines += [f"    e.g. {msg}" for msg in self.examples[reason]]
        return "\n".join(lines)


def iter_examples(corpus: Corpus, split: str, cfg, *, strict: bool = False,
                  resample: bool = True, summary: Summary | None = None,
                  progress: bool = False) -> Iterator[dict[str, Any]]:
    """Labelled examples of a split; bad utterances skipped and counted (raised if strict)."""
    summary = summary if summary is not None else Summary()
    for utt in tqdm(corpus.utterances(split), desc=split, disable=not progress, unit="utt"):
        try:
            example = load_example(corpus, utt, cfg, resample=resample, summary=summary)
        except DataError as e:
            if strict:
                raise
            logging.warning("skipping %s (%s): %s", utt.utt_id, e.reason, e)
            summary.skip(e.reason, e)
            continue
        summary.kept[split] += 1
        yield example


def load_split(corpus: Corpus, split: str, cfg, **kwargs) -> list[dict[str, Any]]:
    """Every labelled example of a split in memory (for small corpora: synthetic, tests)."""
    return list(iter_examples(corpus, split, cfg, **kwargs))
