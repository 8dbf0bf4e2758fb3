"""TFDS builder `aishell1`: array_record files, readable without TensorFlow.

tfds.features.Audio needs TensorFlow, so audio is an int16 Tensor. Records are
written in generation order (disable_shuffling), so the per-example lengths and
segment counts saved in metadata.json line up with record indices; the pipeline
re-checks each length as it reads. TFDS writes into an `incomplete.*` folder and
renames it only when every split and dataset_info.json are written, so an
interrupted build never loads as a dataset.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from w2v_jax import files
from w2v_jax.data import aishell
from w2v_jax.data import labels as L
from w2v_jax.data import sources
from w2v_jax.data.errors import DataError

NAME = "aishell1"
DATASET_INFO = "dataset_info.json"  # TFDS takes a folder without it for no dataset


def _default_config():
    from w2v_jax.models.config import Wav2Vec2Config
    return Wav2Vec2Config()


class Aishell1(tfds.core.GeneratorBasedBuilder):
    """AISHELL-1 (or the synthetic corpus) with frame and segment labels for every task."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass corpus_dir (the folder holding data_aishell/ and resource_aishell/, or use it as "
        "manual_dir) and alignments_dir (MFA TextGrids or Kaldi CTMs; default CORPUS/alignments).")

    # TFDS's own lookup of this file goes through importlib_resources, which the
    # venv lacks (an undeclared dependency of etils.epath); the answer is simply this file.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(self, *, corpus_dir: str | None = None, alignments_dir: str | None = None,
                 model_config=None, strict: bool = False, resample: bool = True,
                 splits: Sequence[str] = aishell.SPLITS, **kwargs):
        self._corpus_dir, self._alignments_dir = corpus_dir, alignments_dir
        self._cfg = model_config or _default_config()
        self._strict, self._resample, self._splits = strict, resample, tuple(splits)
        self.summary = aishell.Summary()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        ints = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)
        floats = lambda: tfds.features.Tensor(shape=(None,), dtype=np.float32)
        features = tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "speaker": tfds.features.Text(),
            "sex": tfds.features.Text(), "transcript": tfds.features.Text(),
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
            "frames": tfds.features.FeaturesDict({task: ints() for task in L.TASKS}),
            "segments": tfds.features.FeaturesDict(
                {"start": floats(), "end": floats(), "frame": ints(), **{t: ints() for t in L.TASKS}}),
        })
        metadata = tfds.core.MetadataDict(
            inventories=L.inventories(), frame_geometry=sources.frame_geometry(self._cfg),
            version=sources.METADATA_VERSION, splits={})
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features, metadata=metadata,
            disable_shuffling=True, homepage="https://www.openslr.org/33/")

    def _split_generators(self, dl_manager):
        corpus_dir = self._corpus_dir or os.fspath(dl_manager.manual_dir)
        corpus = aishell.Corpus(corpus_dir, self._alignments_dir)
        return {split: self._generate_examples(corpus, split) for split in self._splits
                if corpus.utterances(split)}

    def _generate_examples(self, corpus: aishell.Corpus, split: str):
        index = self.info.metadata["splits"].setdefault(split, {"lengths": [], "num_segments": []})
        for example in aishell.iter_examples(corpus, split, self._cfg, strict=self._strict,
                                             resample=self._resample, summary=self.summary,
                                             progress=True):
            index["lengths"].append(len(example["audio"]))
            index["num_segments"].append(len(example["segments"]["frame"]))
            yield example["id"], example


def prepare(corpus_dir: str, data_dir: str, *, alignments_dir: str | None = None, cfg=None,
            strict: bool = False, resample: bool = True) -> aishell.Summary:
    """Build the `aishell1` dataset under data_dir; returns what was kept and skipped.

    TFDS finishes a build by renaming its folder, a copy on an object store: a data_dir there
    is built on the local disk and uploaded with dataset_info.json, which TFDS requires of a
    prepared dataset, last."""
    if not files.is_local(data_dir):
        with tempfile.TemporaryDirectory() as local:
            summary = prepare(corpus_dir, local, alignments_dir=alignments_dir, cfg=cfg,
                              strict=strict, resample=resample)
            built = sorted((p for p in pathlib.Path(local).rglob("*") if p.is_file()),
                           key=lambda p: p.name == DATASET_INFO)
            for path in built:
                target = files.path(data_dir) / path.relative_to(local)
                target.parent.mkdir(parents=True, exist_ok=True)
                files.copy_file(path, target)
        return summary
    builder = Aishell1(data_dir=data_dir, corpus_dir=corpus_dir, alignments_dir=alignments_dir,
                       model_config=cfg, strict=strict, resample=resample,
                       file_format="array_record")
    builder.download_and_prepare()
    logging.info("aishell1 prepared in %s", builder.data_dir)
    return builder.summary


def load_metadata(data_dir: str) -> tuple[str, dict[str, Any]]:
    """The prepared dataset's folder and its metadata.json (as written, not the code's defaults)."""
    builder = Aishell1(data_dir=data_dir)
    if not builder.is_prepared():
        raise DataError(f"{data_dir}: no complete {NAME} dataset (version {Aishell1.VERSION}); "
                        "run launch.prepare_data (an interrupted build leaves none)")
    return os.fspath(builder.data_dir), files.read_json(files.path(builder.data_dir) / "metadata.json")


def open_prepared(data_dir: str, split: str, cfg=None) -> sources.DatasetSplit:
    """A split of a prepared dataset, checked against the code's inventories and the model's frames."""
    cfg = cfg or _default_config()
    dataset_dir, metadata = load_metadata(data_dir)
    L.check_inventories(metadata.get("inventories", {}), source=dataset_dir)
    sources.check_frame_geometry(metadata.get("frame_geometry", {}), cfg, source=dataset_dir)
    if split not in metadata["splits"]:
        raise DataError(f"{dataset_dir}: no split {split!r} (has {sorted(metadata['splits'])})")
    source = tfds.data_source(NAME, split=split, data_dir=data_dir, download=False)
    index = metadata["splits"][split]
    return sources.DatasetSplit(source, index["lengths"], index["num_segments"], split, metadata)
