"""Claim verdicts on constructed scores whose answer is known (issue #14, items 2 and 4)."""

import jax
import numpy as np
import pytest

from w2v_jax.analysis.bootstrap import resample_counts
from w2v_jax.analysis.claims import FINE_TUNINGS, check_claims, paper_claims, verdict


@pytest.mark.parametrize("kind,ci,want", [
    ("rises", [0.01, 0.2], "holds"), ("rises", [-0.2, -0.01], "fails"),
    ("rises", [-0.01, 0.2], "undecided"), ("falls", [-0.2, -0.01], "holds"),
    ("falls", [0.01, 0.2], "fails"), ("falls", [-0.1, 0.1], "undecided"),
    ("keeps", [0.0001, 0.1], "holds"), ("keeps", [-0.3, -0.1], "fails"),
    ("same_accuracy", [-0.01, 0.015], "holds"), ("same_accuracy", [0.03, 0.05], "fails"),
    ("same_accuracy", [-0.05, -0.021], "fails"), ("same_accuracy", [0.0, 0.03], "undecided"),
    ("rises", None, "undecided"), ("rises", [np.nan, 0.1], "undecided"),
])
def test_verdict_rules(kind, ci, want):
    assert verdict(kind, ci, margin=0.02 if kind == "same_accuracy" else None) == want


SPEAKERS = np.array([f"S{i:02d}" for i in range(8)])
B, L = 50, 6


def curve(top, spread=0.005, seed=0):
    """Scores whose top two layers sit at `top`, resamples spread around it."""
    values = np.linspace(0.1, top, L)
    values[-2:] = top
    noise = np.random.default_rng(seed).normal(0, spread, (B, 1))
    return {"svcca": values, "svcca_samples": values + noise, "speakers": SPEAKERS}


def accuracy_of(rate, seed):
    frames = np.full(len(SPEAKERS), 1000.0)
    correct = np.round(frames * (rate + np.random.default_rng(seed).normal(0, 0.002, len(SPEAKERS))))
    return {"speakers": SPEAKERS, "correct": correct, "frames": frames}


def test_claims_on_known_scores():
    scores = {
        "pretrained": {"tone": curve(0.4, seed=1), "final": curve(0.5, seed=2),
                       "sex": curve(0.6, seed=3)},
        "tone": {"tone": curve(0.8, seed=4), "final": curve(0.5, seed=5),
                 "sex": curve(0.3, seed=6)},  # sex falls: holds
        "sex": {"tone": curve(0.7, seed=7), "final": curve(0.5, 0.2, seed=8),  # tone rises: fails
                "sex": curve(0.9, seed=9)},  # final: too noisy -> undecided
        "tone+sex": {"tone": curve(0.79, seed=10), "sex": curve(0.3, seed=11),  # keeps tone;
                     "final": curve(0.5, seed=12)},  # sex (0.3 < 0.9 x 0.9) is not kept
        # final+sex: not trained -> every claim about it undecided, with the reason
        "final": {"final": curve(0.9, seed=13), "tone": {"skipped": "1 class(es)"},
                  "sex": curve(0.6, seed=14)},
    }
    accuracy = {"tone": {"tone": accuracy_of(0.80, 1)}, "sex": {"sex": accuracy_of(0.95, 2)},
                "tone+sex": {"tone": accuracy_of(0.805, 3), "sex": accuracy_of(0.85, 4)}}
    claims = check_claims(scores, accuracy, top_fraction=1 / 3, keep_fraction=0.9,
                          same_accuracy_margin=0.02, num_samples=B)
    assert len(claims) == len(paper_claims(FINE_TUNINGS))  # none dropped
    got = {(c["model"], c["label"], c["kind"]): c for c in claims}
    want = {("tone", "tone", "rises"): "holds", ("tone", "sex", "falls"): "holds",
            ("sex", "tone", "falls"): "fails", ("sex", "final", "falls"): "undecided",
            ("sex", "sex", "rises"): "holds", ("final", "final", "rises"): "holds",
            ("final", "sex", "falls"): "undecided",  # 0.6 -> 0.6: no change
            ("tone+sex", "tone", "keeps"): "holds", ("tone+sex", "sex", "keeps"): "fails",
            ("tone+sex", "tone", "same_accuracy"): "holds",
            ("tone+sex", "sex", "same_accuracy"): "fails"}
    for key, verdict_wanted in want.items():
        assert got[key]["verdict"] == verdict_wanted, (key, got[key])
    tone_rise = got[("tone", "tone", "rises")]
    assert tone_rise["estimate"] == pytest.approx(0.4)
    assert tone_rise["ci"][0] < 0.4 < tone_rise["ci"][1] and tone_rise["n_speakers"] == 8
    skipped = got[("final", "tone", "rises")] if ("final", "tone", "rises") in got else None
    assert skipped is None  # tone is not a claim about the final model
    for key, c in got.items():
        if key[0] == "final+sex":
            assert c["verdict"] == "undecided" and "final+sex" in c["reason"]
    missing_label = [c for c in claims if c["model"] == "sex" and c["label"] == "final"][0]
    assert missing_label["ci"] is not None  # noisy, not missing
    for c in claims:
        assert set(c) >= {"claim", "model", "label", "kind", "verdict", "estimate", "ci",
                          "n_speakers", "figures"}


def test_accuracy_resamples_pair_with_the_bootstrap():
    """The accuracy interval resamples speakers exactly as the SVCCA bootstrap does."""
    acc = accuracy_of(0.8, 0)
    counts = np.asarray(resample_counts(jax.random.key(0), len(SPEAKERS), B), float)
    from w2v_jax.analysis.claims import _accuracy
    stat = _accuracy({"m": {"tone": acc}}, "m", "tone", B, 0, 5)
    np.testing.assert_allclose(stat.samples, counts @ acc["correct"] / (counts @ acc["frames"]))


def test_claims_without_intervals_are_undecided_with_the_reason():
    scores = {"pretrained": {"tone": {"svcca": np.full(L, 0.2), "interval_reason": "too few speakers: 2"}},
              "tone": {"tone": {"svcca": np.full(L, 0.9)}}}
    claims = check_claims(scores, {}, top_fraction=0.5, keep_fraction=0.9,
                          same_accuracy_margin=0.02, fine_tunings=("tone",))
    rise = [c for c in claims if c["kind"] == "rises"][0]
    assert rise["verdict"] == "undecided" and rise["estimate"] == pytest.approx(0.7)
    assert "too few speakers: 2" in rise["reason"]
