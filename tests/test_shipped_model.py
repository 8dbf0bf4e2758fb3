"""The pre-trained model that ships in models/w2v2-small-cmn: whole, documented, disjoint from
the demo's speakers, and the same network in transformers after `launch.convert --to_hf`."""

import json
import os

import numpy as np
import pytest

from configs.paper import SHIPPED_MODEL as MODEL


def _size(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)


def test_it_is_whole_small_and_documented():
    from w2v_jax import checkpoint

    assert checkpoint.is_pretraining_model(MODEL)
    assert _size(MODEL) <= 40 * 2**20
    for name in ("README.md", "training.json", "curves.png", "probes.md", "probes.png"):
        assert os.path.isfile(os.path.join(MODEL, name)), name
    with open(os.path.join(MODEL, "training.json")) as f:
        record = json.load(f)
    last = record["dev"][-1]
    assert last["step"] == record["config"]["total_steps"]
    assert last["dev/contrastive_loss"] < np.log(record["config"]["objective"]["num_negatives"] + 1)
    with open(os.path.join(MODEL, "README.md")) as f:
        card = f.read()
    assert f"{last['dev/contrastive_loss']:.2f}" in card  # the card states the final dev loss


def test_it_never_heard_the_demos_speakers():
    """The demo corpus is voices 0..39 (configs/paper.py:demo); pre-training heard others."""
    import configs.paper

    with open(os.path.join(MODEL, "training.json")) as f:
        corpus = json.load(f)["corpus"]
    demo = configs.paper.get_config("demo").corpus
    assert corpus["generator"] == "espeak" and len(corpus["speakers"]) >= 40
    assert not set(corpus["speakers"]) & set(range(demo.speakers))


@pytest.mark.slow
def test_its_transformers_export_computes_the_same(tmp_path):
    from tests.tiny_hf import check_transformers_export

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    check_transformers_export(MODEL, str(tmp_path / "hf"), env, seconds=2.0)
