"""Alignment readers (MFA TextGrid, Kaldi CTM; pinyin or MFA IPA phones) and frame labels.

A frame takes the label of the segment whose half-open span [start, end) contains
the frame's centre; frames in no segment take IGNORE (-1). Silence labels ("",
sil, sp, spn) are no segment. Sex labels every frame inside a speech segment.
The central frame of a segment is the frame whose centre is nearest the segment
midpoint (ties go to the earlier frame). A segment whose central frame's centre falls
outside it (shorter than a frame's stride, or cut by the audio's edge) has no frame of
its own: that frame belongs to a neighbour (or to silence), so the segment gets no row
in the segment table; `segment_columns` leaves it out and the reader counts it.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from w2v_jax.data import labels as L
from w2v_jax.data import phonesets
from w2v_jax.data.errors import DataError

PHONES_TIER = "phones"
WORDS_TIER = "words"


@dataclasses.dataclass(frozen=True)
class Interval:
    start: float
    end: float
    label: str


@dataclasses.dataclass(frozen=True)
class PhoneSegment:
    start: float
    end: float
    phone: L.Phone

    def task_labels(self, sex: str) -> dict[str, int]:
        """Index per task; IGNORE where the task does not label this kind of phone."""
        is_final = self.phone.kind == "final"
        return {
            "tone": L.label_index("tone", self.phone.tone) if is_final else L.IGNORE,
            "final": L.label_index("final", self.phone.name) if is_final else L.IGNORE,
            "initial": L.IGNORE if is_final else L.label_index("initial", self.phone.name),
            "phone": L.label_index("phone", self.phone.name),
            "sex": L.label_index("sex", sex),
        }


# ------------------------------------------------------------------ readers
def read_textgrid(path: str | os.PathLike) -> list[Interval]:
    """The `phones` tier of an MFA TextGrid (praatio sorts intervals by time)."""
    from praatio import textgrid  # imported here: only alignment reading needs it
    path = os.fspath(path)
    try:
        grid = textgrid.openTextgrid(path, includeEmptyIntervals=True, reportingMode="silence")
    except Exception as e:  # praatio raises several types for malformed files
        raise DataError(f"{path}: cannot read TextGrid: {e}") from None
    if PHONES_TIER not in grid.tierNames:
        raise DataError(f"{path}: no {PHONES_TIER!r} tier (tiers: {list(grid.tierNames)})")
    tier = grid.getTier(PHONES_TIER)
    return [Interval(float(s), float(e), str(lab)) for s, e, lab in tier.entries]


def read_ctm(path: str | os.PathLike) -> dict[str, list[Interval]]:
    """A Kaldi phone CTM (`utt channel start duration phone [conf]`), by utterance.

    Kaldi word-position suffixes (_B _I _E _S) are dropped. Unsorted lines are
    sorted with a warning.
    """
    path = os.fspath(path)
    by_utt: dict[str, list[Interval]] = collections.defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 5:
                raise DataError(f"{path}:{line_no}: expected 'utt channel start dur phone', "
                                f"got {line.strip()!r}")
            try:
                start, dur = float(fields[2]), float(fields[3])
            except ValueError:
                raise DataError(f"{path}:{line_no}: bad start/duration in {line.strip()!r}") from None
            phone = fields[4]
            if len(phone) > 2 and phone[-2] == "_" and phone[-1] in "BIES":
                phone = phone[:-2]
            by_utt[fields[0]].append(Interval(start, start + dur, phone))
    for utt, intervals in by_utt.items():
        if any(a.start > b.start for a, b in zip(intervals, intervals[1:])):
            logging.warning("%s: intervals of %s are not sorted by time; sorting them", path, utt)
            intervals.sort(key=lambda iv: (iv.start, iv.end))
    return dict(by_utt)


def fill_gaps(intervals: Sequence[Interval], xmax: float) -> list[Interval]:
    """A TextGrid tier covers [0, xmax]: empty intervals go in the gaps."""
    out, t = [], 0.0
    for iv in intervals:
        if iv.start > t:
            out.append(Interval(t, iv.start, ""))
        out.append(iv)
        t = iv.end
    if t < xmax:
        out.append(Interval(t, xmax, ""))
    return out


def write_textgrid(path: str | os.PathLike, tiers: Mapping[str, Sequence[Interval]],
                   xmax: float) -> None:
    """Write interval tiers as a long-format Praat TextGrid, exactly as given."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             "xmin = 0", f"xmax = {xmax!r}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for t, (name, intervals) in enumerate(tiers.items(), 1):
        lines += [f"    item [{t}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {xmax!r}",
                  f"        intervals: size = {len(intervals)}"]
        for i, iv in enumerate(intervals, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {iv.start!r}",
                      f"            xmax = {iv.end!r}", f'            text = "{iv.label}"']
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------- segments
def phone_segments(intervals: Iterable[Interval], *, duration: float, frame_seconds: float,
                   source: str) -> list[PhoneSegment]:
    """Speech segments of a phones tier, checked against the audio's duration.

    Overlapping intervals are an error. An interval ending past the audio by at most
    one frame is clipped with a warning (aligners round); further is an error. Labels
    are pinyin phones, or MFA's IPA phones (regrouped by `phonesets`, one table).
    """
    intervals = sorted(intervals, key=lambda iv: (iv.start, iv.end))
    for a, b in zip(intervals, intervals[1:]):
        if b.start < a.end - 1e-9:
            raise DataError(f"{source}: overlapping intervals {a.label!r} [{a.start}, {a.end}] "
                            f"and {b.label!r} [{b.start}, {b.end}]")
    kept: list[Interval] = []
    for iv in intervals:
        if iv.end <= iv.start:
            raise DataError(f"{source}: empty or reversed interval {iv.label!r} [{iv.start}, {iv.end}]")
        if iv.end > duration:
            if iv.end > duration + frame_seconds:
                raise DataError(f"{source}: interval {iv.label!r} [{iv.start}, {iv.end}] ends more "
                                f"than one frame past the audio's end ({duration:.4f} s)")
            logging.warning("%s: clipping interval %r [%s, %s] to the audio's end %.4f s",
                            source, iv.label, iv.start, iv.end, duration)
            iv = dataclasses.replace(iv, end=duration)
            if iv.end <= iv.start:
                continue
        kept.append(iv)
    if phonesets.is_ipa([iv.label for iv in kept]):
        return _ipa_segments(kept, source)
    segments: list[PhoneSegment] = []
    previous_initial, previous_end = "", -math.inf
    for iv in kept:
        if L.is_silence(iv.label):
            previous_initial = ""
            continue
        adjacent = abs(iv.start - previous_end) < 1e-6
        try:
            phone = L.parse_phone(iv.label, previous_initial if adjacent else "")
        except DataError as e:
            raise DataError(f"{source}: interval [{iv.start}, {iv.end}]: {e}") from None
        segments.append(PhoneSegment(iv.start, iv.end, phone))
        previous_initial = phone.name if phone.kind == "initial" else ""
        previous_end = iv.end
    return segments


def _ipa_segments(intervals: Sequence[Interval], source: str) -> list[PhoneSegment]:
    """MFA IPA phones regrouped into pinyin initials and finals (w2v_jax.data.phonesets);
    a syllable never spans silence or a gap between intervals."""
    segments: list[PhoneSegment] = []
    run: list[Interval] = []

    def flush():
        labels = [iv.label for iv in run]
        where = f"{source}: interval [{run[0].start}, {run[-1].end}]" if run else source
        for first, last, phone in phonesets.syllabify(labels, where):
            segments.append(PhoneSegment(run[first].start, run[last].end, phone))
        run.clear()

    for iv in intervals:
        if L.is_silence(iv.label) or (run and abs(iv.start - run[-1].end) > 1e-6):
            if run:
                flush()
            if L.is_silence(iv.label):
                continue
        run.append(iv)
    if run:
        flush()
    return segments


def frame_centers(num_frames: int, cfg, sample_rate: int) -> np.ndarray:
    return np.asarray(cfg.frame_center_seconds(np.arange(num_frames), sample_rate), np.float64)


def frame_labels(segments: Sequence[PhoneSegment], sex: str, num_frames: int, cfg,
                 sample_rate: int = 16000) -> dict[str, np.ndarray]:
    """(num_frames,) int32 labels per task: the segment containing each frame centre."""
    centers = frame_centers(num_frames, cfg, sample_rate)
    out = {task: np.full(num_frames, L.IGNORE, np.int32) for task in L.TASKS}
    for seg in segments:
        lo, hi = np.searchsorted(centers, [seg.start, seg.end], side="left")
        for task, index in seg.task_labels(sex).items():
            out[task][lo:hi] = index
    return out


def central_frames(starts: np.ndarray, ends: np.ndarray, num_frames: int, cfg,
                   sample_rate: int = 16000) -> np.ndarray:
    """Per segment, the frame whose centre is nearest its midpoint (earlier on ties)."""
    mid_samples = (np.asarray(starts, np.float64) + np.asarray(ends, np.float64)) / 2 * sample_rate
    position = (mid_samples - cfg.receptive_field / 2) / cfg.frame_stride
    frame = np.ceil(position - 0.5)  # nearest integer, halves rounded down
    return np.clip(frame, 0, max(num_frames - 1, 0)).astype(np.int32)


def owns_central_frame(segments: Sequence[PhoneSegment], frames: np.ndarray, num_frames: int,
                       cfg, sample_rate: int = 16000) -> np.ndarray:
    """(K,) bool: the central frame's centre lies in the segment's [start, end), the same
    test `frame_labels` uses, so the frame carries this segment's labels."""
    centers = frame_centers(num_frames, cfg, sample_rate)[frames] if len(frames) else np.zeros(0)
    starts = np.array([s.start for s in segments], np.float64)
    ends = np.array([s.end for s in segments], np.float64)
    return (starts <= centers) & (centers < ends)


def segment_columns(segments: Sequence[PhoneSegment], sex: str, num_frames: int, cfg,
                    sample_rate: int = 16000) -> dict[str, np.ndarray]:
    """Segment table of one utterance: start, end (s), central frame, label per task.

    Only segments that contain their central frame's centre (`owns_central_frame`).
    """
    frames = central_frames([s.start for s in segments], [s.end for s in segments],
                            num_frames, cfg, sample_rate)
    owned = owns_central_frame(segments, frames, num_frames, cfg, sample_rate)
    segments = [s for s, keep in zip(segments, owned) if keep]
    starts = np.array([s.start for s in segments], np.float32)
    ends = np.array([s.end for s in segments], np.float32)
    columns = {"start": starts, "end": ends, "frame": frames[owned].astype(np.int32)}
    per_segment = [s.task_labels(sex) for s in segments]
    for task in L.TASKS:
        columns[task] = np.array([row[task] for row in per_segment], np.int32)
    return columns
