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

import dataclasses
import os
import zlib

import numpy as np
import soundfile as sf
from absl import logging

from w2v_jax.files import local_only
from w2v_jax.data.aishell import WAV_DIR
from w2v_jax.data.audio import SAMPLE_RATE, read_wav
from w2v_jax.data.errors import DataError
from w2v_jax.data.pipeline import DEFAULT_WORKERS, PlannedBatches, bucket_lengths

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
    directory = local_only(directory, "unlabelled audio")
    corpus_split = os.path.join(directory, WAV_DIR, split)
    if os.path.isdir(os.path.join(directory, WAV_DIR)):
        return scan(find_audio(corpus_split), corpus_split, min_samples=min_samples)
    paths = [p for p in find_audio(directory)
             if (_held_out(os.path.relpath(p, directory), eval_fraction)) == (split == "dev")]
    return scan(paths, f"{directory} ({split})", min_samples=min_samples)


def _held_out(relative_path: str, fraction: float) -> bool:
    return zlib.crc32(relative_path.encode()) % 10_000 < fraction * 10_000


class AudioBatches(PlannedBatches):
    """Iterator of numpy batches of (cropped) audio; see the module docstring.

    train=True: shuffled by (seed, epoch), endless, random crops. train=False: one pass in
    length order, crops from the start, the last batch padded and flagged by example_mask.
    """

    def __init__(self, files: AudioFiles, cfg, *, batch_size: int, train: bool, seed: int = 0,
                 max_samples: int, process_index: int = 0, process_count: int = 1,
                 num_buckets: int = 8, normalize: bool = True, sort_window: int = 16,
                 prefetch: int = 2, workers: int = DEFAULT_WORKERS, processes: int = 0):
        super().__init__(np.minimum(files.lengths, max_samples), batch_size=batch_size,
                         train=train, seed=seed, process_index=process_index,
                         process_count=process_count, sort_window=sort_window, prefetch=prefetch,
                         workers=workers, processes=processes)
        self.files, self.cfg, self.max_samples, self.normalize = files, cfg, max_samples, normalize
        self.buckets = bucket_lengths(self.lengths, cfg, num_buckets)
        if train and len(files) < self.global_batch:
            raise DataError(f"{files.source}: {len(files)} files cannot fill one global batch "
                            f"of {self.global_batch}")

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
