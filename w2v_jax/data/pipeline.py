"""Length-bucketed, shardable, resumable numpy batches for training and extraction.

Our own small pipeline, grain only for its worker processes: the whole epoch plan
(which examples go in which batch, padded to which length) is a pure function of
(seed, epoch) and the per-example lengths, so every process computes the same plan,
reads only its own share, and the iterator state is two integers. `workers` threads
assemble the next batches in parallel, each into its planned place in the queue, so
the order, and a resume, do not depend on them. Decoding a TFDS record holds the GIL,
so threads stop scaling at about one core: `processes` grain worker processes instead
each assemble every n-th planned batch (grain's mp_prefetch over the plan's
positions), interleaved back into the planned order; the batches arrive through
shared memory, which is why a batch holds no Python-object arrays.

Batch keys (B = per-process batch size, S = padded samples, T = cfg.num_frames(S)):
  input_values (B, S) float32, attention_mask (B, S) int32,
  labels/<task> (B, T) int32 (-1 = ignore, also on padding),
  index (B,) int32 record index in the split (-1 = padding), id (B,) and speaker (B,)
  fixed-width unicode ("" on padding), example_mask (B,) bool (False on evaluation padding),
  segments/{frame,<task>} (B, K) int32 and segments/{start,end} (B, K) float32,
  segments/index (B, K) int32 (row within the utterance), all -1 padded;
  K comes from a fixed set (powers of two, at least 8).
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import math
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Sequence

import numpy as np

from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError
from w2v_jax.data.sources import DatasetSplit, text

MIN_SEGMENT_BUCKET = 8
DEFAULT_WORKERS = 2  # bench/input.py measures 0, 1 and 2
ENDLESS = 1 << 40  # positions of a training stream: more batches than any run reads


def bucket_lengths(lengths: Sequence[int], cfg, num_buckets: int = 8) -> tuple[int, ...]:
    """At most `num_buckets` padded lengths: length quantiles rounded up to the frame stride."""
    lengths = np.asarray(lengths)
    stride = cfg.frame_stride
    quantiles = np.quantile(lengths, np.arange(1, num_buckets + 1) / num_buckets, method="higher")
    rounded = {int(math.ceil(max(q, cfg.receptive_field) / stride) * stride) for q in quantiles}
    return tuple(sorted(rounded))


def shuffled_plan(lengths: np.ndarray, global_batch: int, seed: int, epoch: int,
                  sort_window: int = 16) -> list[np.ndarray]:
    """A training epoch's global batches of record indices: shuffled by (seed, epoch), sorted by
    length inside windows of `sort_window` batches so that similar lengths batch together; the
    remainder that does not fill a batch is dropped."""
    n, g = len(lengths), global_batch
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)[: n // g * g]
    window = g * sort_window
    chunks = [c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(window, len(order), window))]
    batches = np.concatenate(chunks).reshape(-1, g)
    return list(batches[rng.permutation(len(batches))])


def _segment_bucket(count: int) -> int:
    return max(MIN_SEGMENT_BUCKET, 1 << max(int(count) - 1, 0).bit_length())


class PlannedBatches:
    """The planned, resumable, prefetching iteration every batch source shares.

    A subclass sets `lengths` (per record, in samples) and implements
    `_batch(global_indices, epoch)`: this process's rows of one planned global batch.
    train=True: shuffled by (seed, epoch) in length-sorted windows, repeats forever, the
    epoch's remainder that does not fill a global batch is dropped. train=False: one pass
    in length order, the last batch padded (-1 records) and flagged by example_mask.
    The position (epoch, step) is the whole iterator state, so a resume replays exactly.
    `workers` threads (0: the caller's) assemble up to max(prefetch, workers) batches ahead.
    `processes` > 0 replaces the threads by that many grain worker processes, started at the
    first batch (again only after a set_state mid-stream) and each about prefetch / processes
    batches ahead; close() stops them. A subclass must pickle (it is sent to the workers).
    """

    def __init__(self, lengths: np.ndarray, *, batch_size: int, train: bool, seed: int,
                 process_index: int, process_count: int, sort_window: int, prefetch: int,
                 workers: int, processes: int = 0):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.process_index, self.process_count = process_index, process_count
        self.global_batch = batch_size * process_count
        self.sort_window, self.ahead = sort_window, max(prefetch, workers)
        self.processes = processes
        self._epoch, self._step = 0, 0
        self._plans: dict[int, list[np.ndarray]] = {}
        self._pool = (concurrent.futures.ThreadPoolExecutor(max_workers=workers)
                      if workers and not processes else None)
        self._pending: collections.deque = collections.deque()
        self._stream = None  # the grain workers' batches in planned order, from self's position

    # ------------------------------------------------------------- planning
    def _plan(self, epoch: int) -> list[np.ndarray]:
        """Global batches of the epoch: (global_batch,) record indices, -1 padding."""
        if epoch not in self._plans:
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
            self._plans[epoch] = self._make_plan(epoch)
        return self._plans[epoch]

    def _make_plan(self, epoch: int) -> list[np.ndarray]:
        n, g = len(self.lengths), self.global_batch
        if not self.train:
            order = np.argsort(self.lengths, kind="stable")
            padded = np.full(math.ceil(n / g) * g, -1, np.int64)
            padded[:n] = order
            return list(padded.reshape(-1, g))
        return shuffled_plan(self.lengths, g, self.seed, epoch, self.sort_window)

    def __len__(self) -> int:
        """Batches per epoch (the same on every process)."""
        return len(self._plan(0))

    def local_plan(self, epoch: int = 0) -> list[np.ndarray]:
        """This process's record indices of every batch of the epoch (-1 = padding)."""
        start = self.process_index * self.batch_size
        return [b[start: start + self.batch_size] for b in self._plan(epoch)]

    def planned_batch(self, position: int) -> dict[str, Any]:
        """This process's batch at `position` (0, 1, ...) of the stream (endless in training),
        from the plan alone: what a worker process computes."""
        epoch, step = divmod(position, len(self._plan(0)))  # every training epoch is as long
        return self._batch(self._plan(epoch)[step], epoch)

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process gets: the plan and the data, without threads or workers."""
        return {**self.__dict__, "processes": 0, "_pool": None, "_pending": collections.deque(),
                "_stream": None}

    # -------------------------------------------------------------- state
    def get_state(self) -> dict[str, int]:
        return {"epoch": self._epoch, "step": self._step, "seed": self.seed,
                "process_count": self.process_count, "batch_size": self.batch_size}

    def set_state(self, state: dict[str, int]) -> None:
        for key in ("seed", "process_count", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"iterator state has {key}={state[key]}, this iterator {getattr(self, key)}")
        self._cancel_pending()
        self._stop_workers()
        self._epoch, self._step = int(state["epoch"]), int(state["step"])

    # ------------------------------------------------------------ iteration
    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        if self.processes:
            return self._next_from_workers()
        self._fill()
        position, result = self._pending[0]
        if position is None:  # evaluation pass finished; stays finished
            raise StopIteration
        self._pending.popleft()
        batch = result.result() if isinstance(result, concurrent.futures.Future) else result
        self._epoch, self._step = self._following(*position)
        self._fill()  # start work on the next batches while the caller computes
        return batch

    def _following(self, epoch: int, step: int) -> tuple[int, int]:
        if not self.train or step + 1 < len(self._plan(epoch)):
            return epoch, step + 1
        return epoch + 1, 0

    def _fill(self) -> None:
        """Queue (position, batch or future) up to `ahead` batches ahead; None marks the end."""
        if self._pending:
            last = self._pending[-1][0]
            if last is None:
                return
            position = self._following(*last)
        else:
            position = (self._epoch, self._step)
        while len(self._pending) < max(1, self.ahead):
            epoch, step = position
            if step >= len(self._plan(epoch)):
                self._pending.append((None, None))
                return
            indices = self._plan(epoch)[step]  # planned here: plans are only touched on this thread
            result = (self._pool.submit(self._batch, indices, epoch) if self._pool
                      else self._batch(indices, epoch))
            self._pending.append((position, result))
            position = self._following(epoch, step)

    def _next_from_workers(self) -> dict[str, Any]:
        if self._step >= len(self._plan(self._epoch)):  # evaluation pass finished
            raise StopIteration
        if self._stream is None:
            self._stream = self._start_workers()
        batch = next(self._stream)
        self._epoch, self._step = self._following(self._epoch, self._step)
        return batch

    def _start_workers(self):
        """grain workers assembling the planned batches from this position on: worker i of n
        takes positions i, i + n, ... and grain interleaves them back in turn, so the order is
        the plan's whatever n."""
        import grain
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain 0.2.18 reads it unparsed (google/grain#1355)
            flags.FLAGS["grain_enable_multiprocess_worker_profiling"].present = True
        atexit.unregister(_end_workers_at_exit)  # once, and after multiprocessing's own hook
        atexit.register(_end_workers_at_exit)
        per_epoch = len(self._plan(0))
        position = self._epoch * per_epoch + self._step
        positions = grain.MapDataset.range(position, ENDLESS if self.train else per_epoch)
        # Inside a worker one batch at a time: grain's default ReadOptions (16 threads, 500
        # elements ahead) would contend for the GIL and hold hundreds of batches.
        read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        options = grain.MultiprocessingOptions(
            num_workers=self.processes,
            per_worker_buffer_size=max(1, math.ceil(self.ahead / self.processes)))
        stream = (positions.map(self.planned_batch).to_iter_dataset(read)
                  .mp_prefetch(options, worker_init_fn=functools.partial(_worker_init, os.getpid())))
        return iter(stream)

    def _stop_workers(self) -> None:
        if self._stream is not None:
            self._stream.close()  # grain joins its workers
            self._stream = None

    def _cancel_pending(self) -> None:
        for _, result in self._pending:
            if isinstance(result, concurrent.futures.Future):
                result.cancel()
        self._pending.clear()

    def close(self) -> None:
        self._cancel_pending()
        self._stop_workers()
        if self._pool:
            self._pool.shutdown(wait=True)

    def _batch(self, global_indices: np.ndarray, epoch: int) -> dict[str, Any]:
        raise NotImplementedError


def _end_workers_at_exit() -> None:
    """At interpreter exit with workers still running (batches never closed, Ctrl-C): end them
    at once. Otherwise grain's exit hook waits up to 25 s for each worker to finish its batch
    (a Ctrl-C'd parent took 7 s to exit on 2 loaded cores, 2 s with this). atexit runs this
    before multiprocessing's hook (registered earlier), so grain then finds them gone."""
    for child in multiprocessing.active_children():
        if child.name.startswith("grain-"):
            child.terminate()


def _worker_init(parent_pid: int, worker_index: int, worker_count: int) -> None:
    """In each grain worker: Ctrl-C is the parent's to handle (it closes the workers), and a
    parent killed without closing them (SIGKILL, or SIGTERM where nothing catches it) takes
    them along; otherwise they would wait on their full queues forever."""
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def exit_with_parent():
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True, name="exit-with-parent").start()


class Batches(PlannedBatches):
    """Iterator of numpy batch dicts over a DatasetSplit (PlannedBatches' plan and state).
    Each of `process_count` processes takes its own slice of every global batch.
    """

    def __init__(self, data: DatasetSplit, cfg, *, batch_size: int, train: bool, seed: int = 0,
                 tasks: Sequence[str] = L.TASKS, process_index: int = 0, process_count: int = 1,
                 buckets: Sequence[int] | None = None, num_buckets: int = 8,
                 sort_window: int = 16, normalize: bool = True, prefetch: int = 2,
                 workers: int = DEFAULT_WORKERS, processes: int = 0):
        unknown = set(tasks) - set(L.TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {L.TASKS}")
        super().__init__(data.lengths, batch_size=batch_size, train=train, seed=seed,
                         process_index=process_index, process_count=process_count,
                         sort_window=sort_window, prefetch=prefetch, workers=workers,
                         processes=processes)
        self.data, self.cfg, self.tasks, self.normalize = data, cfg, tuple(tasks), normalize
        self.buckets = tuple(buckets) if buckets else bucket_lengths(data.lengths, cfg, num_buckets)
        if any(b % cfg.frame_stride for b in self.buckets):
            raise ValueError(f"bucket lengths {self.buckets} must be multiples of {cfg.frame_stride}")
        if data.lengths.max(initial=0) > self.buckets[-1]:
            raise ValueError(f"longest example ({data.lengths.max()} samples) exceeds the largest "
                             f"bucket {self.buckets[-1]}")
        if train and len(data) < self.global_batch:
            raise ValueError(f"{len(data)} examples cannot fill one global batch of {self.global_batch}")

    # ------------------------------------------------------------- assembly
    def _batch(self, global_indices: np.ndarray, epoch: int) -> dict[str, Any]:
        """This process's slice of a global batch, padded to the global batch's buckets."""
        real = global_indices[global_indices >= 0]
        pad_to = next(b for b in self.buckets if b >= self.data.lengths[real].max())
        k = _segment_bucket(self.data.num_segments[real].max())
        local = global_indices[self.process_index * self.batch_size:][: self.batch_size]
        return self._assemble(local, pad_to, k)

    def _assemble(self, indices: np.ndarray, num_samples: int, k: int) -> dict[str, Any]:
        b, t = len(indices), int(self.cfg.num_frames(num_samples))
        out: dict[str, Any] = {
            "input_values": np.zeros((b, num_samples), np.float32),
            "attention_mask": np.zeros((b, num_samples), np.int32),
            **{f"labels/{task}": np.full((b, t), L.IGNORE, np.int32) for task in self.tasks},
            "index": indices.astype(np.int32), "example_mask": indices >= 0,
            "id": [""] * b, "speaker": [""] * b,  # fixed-width unicode arrays once filled
            "segments/index": np.full((b, k), -1, np.int32),
            "segments/frame": np.full((b, k), -1, np.int32),
            "segments/start": np.full((b, k), -1, np.float32),
            "segments/end": np.full((b, k), -1, np.float32),
            **{f"segments/{task}": np.full((b, k), L.IGNORE, np.int32) for task in self.tasks},
        }
        rows = [(row, int(index)) for row, index in enumerate(indices) if index >= 0]
        for (row, index), example in zip(rows, _read(self.data.source, [i for _, i in rows])):
            self._fill_row(out, row, index, example)
        # No Python objects in a batch: grain moves every array through shared memory.
        out["id"], out["speaker"] = np.asarray(out["id"], str), np.asarray(out["speaker"], str)
        return out

    def _fill_row(self, out: dict[str, Any], row: int, index: int, example: dict[str, Any]) -> None:
        audio = np.asarray(example["audio"])
        n = len(audio)
        if n != self.data.lengths[index]:
            raise DataError(f"{self.data.split}[{index}] ({text(example['id'])}): {n} samples but the "
                            f"dataset index says {self.data.lengths[index]}; the dataset is inconsistent")
        values = audio.astype(np.float32) / 32768.0
        if self.normalize:  # as HF's Wav2Vec2FeatureExtractor(do_normalize=True), real samples only
            values = (values - values.mean()) / np.sqrt(values.var() + 1e-7)
        out["input_values"][row, :n] = values
        out["attention_mask"][row, :n] = 1
        out["id"][row], out["speaker"][row] = text(example["id"]), text(example["speaker"])
        for task in self.tasks:
            frames = np.asarray(example["frames"][task])
            out[f"labels/{task}"][row, : len(frames)] = frames
        segments = example["segments"]
        m = len(segments["frame"])
        out["segments/index"][row, :m] = np.arange(m)
        for column in ("frame", "start", "end", *self.tasks):
            out[f"segments/{column}"][row, :m] = segments[column]


def _read(source: Sequence[dict[str, Any]], indices: list[int]) -> Sequence[dict[str, Any]]:
    """The examples at `indices`: a TFDS array_record source reads them in one call, in parallel."""
    if hasattr(source, "__getitems__"):
        return source.__getitems__(indices)
    return [source[i] for i in indices]


def segment_rows(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """The batch's real segments as flat table rows (utterance, segment, batch position...).

    `batch_row` and `frame` say where to gather each row's embedding; (utterance,
    segment) name the row of the split's segment table (sources.segment_table).
    """
    valid = (batch["segments/frame"] >= 0) & batch["example_mask"][:, None]
    rows, cols = np.nonzero(valid)
    out = {"batch_row": rows.astype(np.int32), "utterance": batch["id"][rows].astype(str),
           "speaker": batch["speaker"][rows].astype(str), "example": batch["index"][rows]}
    for key, values in batch.items():
        if key.startswith("segments/"):
            out[key.split("/", 1)[1]] = values[rows, cols]
    out["segment"] = out.pop("index")
    return out
