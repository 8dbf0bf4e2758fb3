"""The headline sweep: its design, each point's fine-tuning, and a tiny sweep end to end."""

import json
import os

import numpy as np
import pytest

import configs.headline_sweep
from w2v_jax.analysis.claims import VERDICTS
from w2v_jax.analysis.store import Store
from w2v_jax.experiment import sweep
from w2v_jax.models import ConfigError

pytestmark = pytest.mark.timeout(900)


def test_points_are_one_factor_at_a_time():
    c = configs.headline_sweep.get_config("cpu").sweep
    pts = sweep.points(c)
    assert len(pts) == 7 and pts[0]["name"] == "centre" and pts[0]["factor"] is None
    centre = {f: pts[0][f] for f in sweep.FACTORS}
    assert centre == {"total_steps": 150, "depth": "encoder", "learning_rate": 5e-4}
    for p in pts[1:]:
        changed = [f for f in sweep.FACTORS if p[f] != centre[f]]
        assert changed == [p["factor"]], p
        assert p["name"] == f"{p['factor']}={p[p['factor']]}"
    assert sorted(p["total_steps"] for p in pts if p["factor"] == "total_steps") == [48, 450]
    assert {p["depth"] for p in pts if p["factor"] == "depth"} == {"heads", "all"}


def test_points_refuse_a_centre_off_the_grid_and_an_unknown_depth():
    c = configs.headline_sweep.get_config("cpu").sweep
    c.centre.total_steps = 100
    with pytest.raises(ConfigError, match=r"sweep.centre.total_steps=100"):
        sweep.points(c)
    c = configs.headline_sweep.get_config("cpu").sweep
    c.depth = ("heads", "encoder", "top")
    with pytest.raises(ConfigError, match="'top'"):
        sweep.points(c)


def test_point_config_sets_the_phases():
    config = configs.headline_sweep.get_config("")
    point = {"total_steps": 300, "learning_rate": 2e-3}
    heads = sweep.point_config(config, {**point, "depth": "heads"}, "/corpus").train
    encoder = sweep.point_config(config, {**point, "depth": "encoder"}, "/corpus").train
    everything = sweep.point_config(config, {**point, "depth": "all"}, "/corpus").train
    assert (heads.total_steps, heads.freeze_steps) == (300, 300)  # the backbone never moves
    assert (encoder.freeze_steps, encoder.freeze_feature_encoder) == (50, True)
    assert (everything.freeze_steps, everything.freeze_feature_encoder) == (50, False)
    assert encoder.optimizer.learning_rate == 2e-3 and encoder.data.dir == "/corpus"
    assert encoder.eval_every == encoder.checkpoint_every == 100
    assert "sweep" not in sweep.point_config(config, {**point, "depth": "all"}, "/c")


def tiny_sweep_config():
    c = configs.headline_sweep.get_config("cpu")
    c.corpus.update(speakers=14, utterances=6, dev_speakers=2, test_speakers=6)
    c.train.init, c.train.freeze_feature_encoder = "random", False  # tiny preset: seconds a run
    c.train.log_every = 10
    c.train.data.num_buckets = 1
    c.analysis.bootstrap = 50
    # One point, heads alone: a whole experiment costs minutes on CI's 2 cores.
    c.sweep.centre.update(total_steps=24, depth="heads", learning_rate=2e-3)
    c.sweep.total_steps, c.sweep.depth, c.sweep.learning_rate = (24,), ("heads",), (2e-3,)
    return c


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    workdir = str(tmp_path)
    rows = sweep.run(tiny_sweep_config(), workdir)
    assert [r["name"] for r in rows] == ["centre"]
    assert json.load(open(tmp_path / "sweep.json")) == json.loads(json.dumps(rows))
    for r in rows:  # each row carries its point's own claims, as the point's report wrote them
        claims = json.load(open(tmp_path / "points" / r["name"] / "report" / "claims.json"))
        assert r["headline"] in claims and r["took"] in claims
        assert (r["headline"]["label"], r["headline"]["kind"]) == ("sex", "falls")
        assert r["headline"]["verdict"] in VERDICTS
    # Heads alone: the backbone never moved, so its embeddings are the pre-trained model's
    # and both tracked changes are exactly zero.
    heads = tmp_path / "points" / "centre" / "embeddings"
    pretrained, tone = Store(str(heads / "pretrained")), Store(str(heads / "tone"))
    for layer in range(pretrained.num_layers):
        np.testing.assert_array_equal(pretrained.layer(layer), tone.layer(layer))
    assert rows[0]["headline"]["estimate"] == 0.0 and rows[0]["took"]["estimate"] == 0.0
    assert rows[0]["freeze_steps"] == 24
    text = open(tmp_path / "sweep.md").read()
    assert "| centre | 24 (24) | heads |" in text and "(sweep.png)" in text
    assert os.path.getsize(tmp_path / "sweep.png") > 0
