"""Unlabelled audio for pre-training: any folder of wav/flac files, or a corpus's split.

    files = audio_files("speech/", "train")          # recursive; AISHELL layout: its train split
    batches = AudioBatches(files, cfg, batch_size=8, train=True, seed=0, max_samples=48000)
    batch = next(batches); state = batches.get_state()   # set_state(state) resumes exactly

Files must be 16 kHz (mono, or channels mixed to mono): another rate is a DataError naming the
file, found when the folder is scanned, before anything trains (resample the corpus once,
rather than on every read). Unreadable and empty files are DataErrors naming the file too.

As fairseq's audio_pretraining task: files shorter than `min_samples` are left out, a longer
one is cropped to `max_samples` at a random offset (a new one each epoch; evaluation takes
the start), the whole file is normalised to zero mean and unit variance before the crop.
Batches are length-bucketed (pipeline.bucket_lengths) and planned by pipeline.shuffled_plan,
so the iterator's state is two integers and every process computes the same plan.

Batch keys (B = per-process rows, S = padded samples): input_values (B, S) float32,
attention_mask (B, S) int32, example_mask (B,) bool (False on evaluation padding).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import zlib
from typing import Any

import numpy as np
import soundfile as sf
from absl import logging

from w2v_jax.data.aishell import WAV_DIR
from w2v_jax.data.audio import SAMPLE_RATE, read_wav
from w2v_jax.data.errors import DataError
from w2v_jax.data.pipeline import bucket_lengths, shuffled_plan

AUDIO_EXTENSIONS = (".wav", ".flac")
SPLITS = ("train", "dev")


@dataclasses.dataclass(frozen=True)
class AudioFiles:
    paths: tuple[str, ...]
    lengths: np.ndarray  # (N,) samples per file
    source: str  # what was scanned, for messages

    def __len__(self) -> int:
        return len(self.paths)


def scan(paths: list[str], source: str, *, min_samples: int = 0) -> AudioFiles:
    """The files' lengths from their headers; DataError naming a file that is unusable."""
    kept, lengths, short = [], [], 0
    for path in paths:
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise DataError(f"{path}: cannot read audio: {e}") from None
        if info.samplerate != SAMPLE_RATE:
            raise DataError(f"{path}: sample rate {info.samplerate} Hz, pre-training reads "
                            f"{SAMPLE_RATE} Hz audio; resample the corpus first")
        if info.frames == 0:
            raise DataError(f"{path}: audio is empty")
        if info.frames < min_samples:
            short += 1
            continue
        kept.append(path)
        lengths.append(info.frames)
    if short:
        logging.info("%s: left out %d files shorter than %d samples", source, short, min_samples)
    if not kept:
        raise DataError(f"{source}: no {'/'.join(AUDIO_EXTENSIONS)} file of at least "
                        f"{min_samples} samples")
    return AudioFiles(tuple(kept), np.asarray(lengths, np.int64), source)


def find_audio(directory: str) -> list[str]:
    """Every wav/flac file under `directory` (recursive), sorted."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: no such directory")
    found = []
    for root, _, files in os.walk(directory):
        found += [os.path.join(root, f) for f in files
                  if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def audio_files(directory: str, split: str, *, eval_fraction: float = 0.02,
                min_samples: int = 0) -> AudioFiles:
    """A split of unlabelled audio. An AISHELL-1-layout corpus (the generated one too) gives its
    own train or dev folder. Any other folder is split by a hash of each file's relative path:
    about `eval_fraction` of the files are dev, the rest train, stable when files are added."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    corpus_split = os.path.join(directory, WAV_DIR, split)
    if os.path.isdir(os.path.join(directory, WAV_DIR)):
        return scan(find_audio(corpus_split), corpus_split, min_samples=min_samples)
    paths = [p for p in find_audio(directory)
             if (_held_out(os.path.relpath(p, directory), eval_fraction)) == (split == "dev")]
    return scan(paths, f"{directory} ({split})", min_samples=min_samples)


def _held_out(relative_path: str, fraction: float) -> bool:
    return zlib.crc32(relative_path.encode()) % 10_000 < fraction * 10_000


class AudioBatches:
    """Iterator of numpy batches of (cropped) audio; see the module docstring.

    train=True: shuffled by (seed, epoch), endless, random crops. train=False: one pass in
    length order, crops from the start, the last batch padded and flagged by example_mask.
    """

    def __init__(self, files: AudioFiles, cfg, *, batch_size: int, train: bool, seed: int = 0,
                 max_samples: int, process_index: int = 0, process_count: int = 1,
                 num_buckets: int = 8, normalize: bool = True, sort_window: int = 16,
                 prefetch: int = 2):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.files, self.cfg, self.batch_size, self.train = files, cfg, batch_size, train
        self.seed, self.max_samples, self.normalize = seed, max_samples, normalize
        self.process_index, self.process_count = process_index, process_count
        self.global_batch = batch_size * process_count
        self.sort_window, self.prefetch = sort_window, prefetch
        self.lengths = np.minimum(files.lengths, max_samples)
        self.buckets = bucket_lengths(self.lengths, cfg, num_buckets)
        if train and len(files) < self.global_batch:
            raise DataError(f"{files.source}: {len(files)} files cannot fill one global batch "
                            f"of {self.global_batch}")
        self._epoch, self._step = 0, 0
        self._plans: dict[int, list[np.ndarray]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1) if prefetch else None
        self._pending: collections.deque = collections.deque()

    def _plan(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._plans:
            if self.train:
                plan = shuffled_plan(self.lengths, self.global_batch, self.seed, epoch, self.sort_window)
            else:
                order = np.argsort(self.lengths, kind="stable")
                padded = np.full(math.ceil(len(order) / self.global_batch) * self.global_batch, -1)
                padded[: len(order)] = order
                plan = list(padded.reshape(-1, self.global_batch))
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
            self._plans[epoch] = plan
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self._plan(0))

    # -------------------------------------------------------------- state
    def get_state(self) -> dict[str, int]:
        return {"epoch": self._epoch, "step": self._step, "seed": self.seed,
                "process_count": self.process_count, "batch_size": self.batch_size}

    def set_state(self, state: dict[str, int]) -> None:
        for key in ("seed", "process_count", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"iterator state has {key}={state[key]}, this iterator {getattr(self, key)}")
        self._cancel_pending()
        self._epoch, self._step = int(state["epoch"]), int(state["step"])

    # ------------------------------------------------------------ iteration
    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        self._fill()
        position, result = self._pending[0]
        if position is None:  # evaluation pass finished; stays finished
            raise StopIteration
        self._pending.popleft()
        batch = result.result() if isinstance(result, concurrent.futures.Future) else result
        self._epoch, self._step = self._following(*position)
        self._fill()  # read the next batches while the caller computes
        return batch

    def _following(self, epoch: int, step: int) -> tuple[int, int]:
        if not self.train or step + 1 < len(self._plan(epoch)):
            return epoch, step + 1
        return epoch + 1, 0

    def _fill(self) -> None:
        """Queue (position, batch or future) up to `prefetch` batches ahead; None marks the end."""
        if self._pending:
            last = self._pending[-1][0]
            if last is None:
                return
            position = self._following(*last)
        else:
            position = (self._epoch, self._step)
        while len(self._pending) < max(1, self.prefetch):
            epoch, step = position
            if step >= len(self._plan(epoch)):
                self._pending.append((None, None))
                return
            indices = self._plan(epoch)[step]
            result = (self._pool.submit(self._batch, indices, epoch) if self._pool
                      else self._batch(indices, epoch))
            self._pending.append((position, result))
            position = self._following(epoch, step)

    def _cancel_pending(self) -> None:
        for _, result in self._pending:
            if isinstance(result, concurrent.futures.Future):
                result.cancel()
        self._pending.clear()

    def close(self) -> None:
        self._cancel_pending()
        if self._pool:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------- assembly
    def _batch(self, global_indices: np.ndarray, epoch: int) -> dict[str, np.ndarray]:
        """This process's rows of a global batch, padded to the global batch's bucket."""
        real = global_indices[global_indices >= 0]
        pad_to = next(b for b in self.buckets if b >= self.lengths[real].max())
        local = global_indices[self.process_index * self.batch_size:][: self.batch_size]
        out = {"input_values": np.zeros((len(local), pad_to), np.float32),
               "attention_mask": np.zeros((len(local), pad_to), np.int32),
               "example_mask": local >= 0}
        for row, index in enumerate(local):
            if index >= 0:
                audio = self._crop(int(index), epoch)
                out["input_values"][row, : len(audio)] = audio
                out["attention_mask"][row, : len(audio)] = 1
        return out

    def _crop(self, index: int, epoch: int) -> np.ndarray:
        path = self.files.paths[index]
        audio = read_wav(path, resample=False).astype(np.float32) / 32768.0
        if len(audio) != self.files.lengths[index]:
            raise DataError(f"{path}: {len(audio)} samples, its header said "
                            f"{self.files.lengths[index]}; was it changed during the run?")
        if self.normalize:  # the whole file, as fairseq (and fine-tuning's pipeline) do
            audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        excess = len(audio) - self.max_samples
        if excess <= 0:
            return audio
        start = (int(np.random.default_rng((self.seed, epoch, index)).integers(0, excess + 1))
                 if self.train else 0)
        return audio[start: start + self.max_samples]
