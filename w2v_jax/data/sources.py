"""Random-access example sources the pipeline reads: a prepared TFDS dataset or a corpus in memory.

A DatasetSplit pairs a source (len() and [i] returning one example dict) with the
per-example audio lengths and segment counts, known without decoding audio, so
that every process can plan the same length-bucketed batches.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from w2v_jax.data import aishell
from w2v_jax.data import labels as L
from w2v_jax.data.errors import DataError

METADATA_VERSION = 1


def frame_geometry(cfg) -> dict[str, Any]:
    """What frame labels depend on; saved with a dataset and checked against the model."""
    return {"frame_stride": int(cfg.frame_stride), "receptive_field": int(cfg.receptive_field),
            "conv_kernel": list(cfg.conv_kernel), "conv_stride": list(cfg.conv_stride),
            "sample_rate": 16000}


def check_frame_geometry(saved: dict[str, Any], cfg, source: str) -> None:
    expected = frame_geometry(cfg)
    if dict(saved) != expected:
        raise DataError(f"{source}: dataset frame geometry {dict(saved)} does not match the "
                        f"model's {expected}; prepare the data again for this model")


def text(value) -> str:
    """Strings come back from TFDS as bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass
class DatasetSplit:
    source: Sequence[dict[str, Any]]
    lengths: np.ndarray  # (N,) audio samples per example
    num_segments: np.ndarray  # (N,) segment-table rows per example
    split: str
    metadata: dict[str, Any]

    def __len__(self) -> int:
        return len(self.lengths)

    def __post_init__(self):
        self.lengths = np.asarray(self.lengths, np.int64)
        self.num_segments = np.asarray(self.num_segments, np.int64)
        if not len(self.source) == len(self.lengths) == len(self.num_segments):
            raise DataError(f"{self.split}: {len(self.source)} examples but {len(self.lengths)} "
                            f"lengths and {len(self.num_segments)} segment counts")


def from_examples(examples: list[dict[str, Any]], split: str, cfg) -> DatasetSplit:
    """Wrap examples already in memory (as aishell.load_example makes them)."""
    metadata = {"inventories": L.inventories(), "frame_geometry": frame_geometry(cfg),
                "version": METADATA_VERSION}
    return DatasetSplit(examples, [len(e["audio"]) for e in examples],
                        [len(e["segments"]["frame"]) for e in examples], split, metadata)


def corpus_split(corpus_dir: str | os.PathLike, split: str, cfg, *,
                 alignments_dir: str | os.PathLike | None = None, **load_kwargs) -> DatasetSplit:
    """A split of an AISHELL-1-layout corpus labelled straight into memory (small corpora)."""
    corpus = aishell.Corpus(corpus_dir, alignments_dir)
    return from_examples(aishell.load_split(corpus, split, cfg, **load_kwargs), split, cfg)


def segment_table(data: DatasetSplit) -> dict[str, np.ndarray]:
    """Every segment of a split, one row each, in example order then time order.

    Columns: example (index into the split), utterance, segment (index within the
    utterance), start, end, frame, speaker, and one label column per task (the
    `sex` column is the sex label index: 0 F, 1 M).
    Reads every example (audio included): meant for a corpus in memory or one pass.
    """
    columns: dict[str, list] = {k: [] for k in ("example", "utterance", "segment", "speaker")}
    arrays: dict[str, list] = {k: [] for k in ("start", "end", "frame", *L.TASKS)}
    for index in range(len(data)):
        example = data.source[index]
        segments = example["segments"]
        k = len(segments["frame"])
        columns["example"] += [index] * k
        columns["utterance"] += [text(example["id"])] * k
        columns["segment"] += list(range(k))
        columns["speaker"] += [text(example["speaker"])] * k
        for name in arrays:
            arrays[name].append(np.asarray(segments[name]))
    table = {k: np.asarray(v) for k, v in columns.items()}
    table.update({k: np.concatenate(v) if v else np.zeros(0) for k, v in arrays.items()})
    return table
