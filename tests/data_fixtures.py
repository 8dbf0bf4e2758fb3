"""Session-wide data fixtures: one small synthetic corpus and one prepared TFDS dataset.

Imported by the data tests (`from tests.data_fixtures import ...`). Results are cached in
this module so that several test files share one build per session.
"""

import os

import pytest

from w2v_jax.models.config import Wav2Vec2Config

NUM_SPEAKERS, UTTERANCES = 6, 4  # dev 2, test 2, train 2 speakers; 24 utterances
_cache: dict = {}


@pytest.fixture(scope="session")
def cfg():
    return Wav2Vec2Config()


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    """Path of a synthetic corpus (TextGrids under CORPUS/alignments). Do not modify it."""
    if "corpus" not in _cache:
        from w2v_jax.data import synthetic
        path = tmp_path_factory.mktemp("synthetic") / "corpus"
        synthetic.make_corpus(path, num_speakers=NUM_SPEAKERS, utterances_per_speaker=UTTERANCES, seed=3)
        _cache["corpus"] = os.fspath(path)
    return _cache["corpus"]


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory, synthetic_corpus, cfg):
    """(data_dir, summary) of the aishell1 dataset prepared from the synthetic corpus."""
    if "tfds" not in _cache:
        from w2v_jax.data import tfds_aishell1
        data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
        summary = tfds_aishell1.prepare(synthetic_corpus, data_dir, cfg=cfg)
        _cache["tfds"] = (data_dir, summary)
    return _cache["tfds"]


@pytest.fixture(scope="session")
def train_split(synthetic_corpus, cfg):
    if "train" not in _cache:
        from w2v_jax.data import sources
        _cache["train"] = sources.corpus_split(synthetic_corpus, "train", cfg)
    return _cache["train"]
