"""The paper's claims, each checked with a speaker-bootstrap interval and a verdict.

Entry point: `check_claims(scores, accuracy, ...)` -> the list written to claims.json.
Every claim of the paper is listed, whatever was computed: one whose inputs are
missing (a model not trained, a label set not scored, no interval) is "undecided"
with the reason. Each claim's statistic is a difference, paired over the same
speaker resamples (the same sorted speaker ids and seed give the same resamples,
see `bootstrap.bootstrap_layers`), with a basic bootstrap interval (`bootstrap.interval`):

    rises / falls   top-layer SVCCA of the fine-tuned model minus the pre-trained one's
    keeps           multi-task top-layer SVCCA minus keep_fraction x the mono-task one's
    same_accuracy   multi-task minus mono-task frame accuracy (equivalence margin)

Verdicts (`verdict`): "holds" when the interval lies on the claimed side of zero
(for same_accuracy: inside [-margin, margin]), "fails" when it lies on the other
side (entirely outside the margin), otherwise "undecided".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from w2v_jax.analysis.bootstrap import TooFewSpeakers, interval, rate_bootstrap

PRETRAINED = "pretrained"
LABEL_SETS = ("tone", "final", "sex")
FINE_TUNINGS = ("tone", "final", "sex", "tone+sex", "final+sex")  # the paper's grid
KINDS = ("rises", "falls", "keeps", "same_accuracy")
VERDICTS = ("holds", "fails", "undecided")


class Missing(Exception):
    """A claim's input is not there; the message is the reason shown in the report."""


def paper_claims(fine_tunings: Sequence[str] = FINE_TUNINGS) -> list[dict[str, str]]:
    """(claim, model, label, kind) of every claim the paper makes about these models."""
    specs = []
    for model in fine_tunings:
        tasks = model.split("+")
        for task in tasks:
            specs.append(dict(claim=f"fine-tuning for {model} raises {task} SVCCA in the top layers",
                              model=model, label=task, kind="rises"))
        if len(tasks) == 1:
            for label in LABEL_SETS:
                # tone and finals share the syllable: neither is irrelevant to the other
                if label not in tasks and not {label, *tasks} <= {"tone", "final"}:
                    specs.append(dict(claim=f"fine-tuning for {model} lowers {label} SVCCA in "
                                            "the top layers (irrelevant information is normalised away)",
                                      model=model, label=label, kind="falls"))
        else:
            for task in tasks:
                specs.append(dict(claim=f"multi-task {model} keeps {task} SVCCA as the {task} "
                                        "model does (suppression is not necessary)",
                                  model=model, label=task, kind="keeps"))
                specs.append(dict(claim=f"multi-task {model} predicts {task} as accurately as "
                                        f"the {task} model", model=model, label=task,
                                  kind="same_accuracy"))
    return specs


def verdict(kind: str, ci: Sequence[float] | None, margin: float | None = None) -> str:
    """The verdict of an interval (None: no interval) for a claim of this kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if ci is None or not np.all(np.isfinite(ci)):
        return "undecided"
    low, high = ci
    if kind == "same_accuracy":
        if margin is None or margin < 0:
            raise ValueError(f"same_accuracy needs an equivalence margin >= 0, got {margin}")
        if -margin <= low and high <= margin:
            return "holds"
        return "fails" if low > margin or high < -margin else "undecided"
    above, below = low > 0, high < 0
    if kind == "falls":
        above, below = below, above
    return "holds" if above else "fails" if below else "undecided"


def top_layers(num_layers: int, top_fraction: float) -> slice:
    """The top `top_fraction` of the layers (at least one): the paper's "top layers"."""
    return slice(num_layers - max(1, int(round(num_layers * top_fraction))), num_layers)


class _Statistic:
    """A point estimate with its per-resample values (None: no interval) and speakers."""

    def __init__(self, point: float, samples: np.ndarray | None, speakers: np.ndarray | None,
                 why_no_interval: str = ""):
        self.point, self.samples, self.speakers = point, samples, speakers
        self.why_no_interval = why_no_interval

    def minus(self, other: _Statistic, weight: float = 1.0) -> _Statistic:
        point = self.point - weight * other.point
        if self.samples is None or other.samples is None:
            why = dict.fromkeys(w for w in (self.why_no_interval, other.why_no_interval) if w)
            return _Statistic(point, None, None, "; ".join(why))
        if (self.speakers is None or other.speakers is None
                or not np.array_equal(self.speakers, other.speakers)
                or len(self.samples) != len(other.samples)):
            return _Statistic(point, None, None, "the two models were resampled over different "
                                                 "speakers or resample counts: no paired interval")
        return _Statistic(point, self.samples - weight * other.samples, self.speakers)


def _svcca_top(scores: Mapping, model: str, label: str, top_fraction: float) -> _Statistic:
    if model not in scores:
        raise Missing(f"no scores for the {model} model")
    by = scores[model].get(label)
    if by is None:
        raise Missing(f"{label} was not scored for {model}")
    if "skipped" in by:
        raise Missing(f"{label} was not scored for {model}: {by['skipped']}")
    values = np.asarray(by["svcca"], float)
    top = top_layers(len(values), top_fraction)
    samples = by.get("svcca_samples")
    if samples is None:
        return _Statistic(float(values[top].mean()), None, None,
                          str(by.get("interval_reason", "no speaker bootstrap was run")))
    return _Statistic(float(values[top].mean()), np.asarray(samples, float)[:, top].mean(axis=1),
                      np.asarray(by["speakers"]))


def _accuracy(accuracy: Mapping, model: str, task: str, num_samples: int, seed: int,
              min_speakers: int) -> _Statistic:
    """Frame accuracy of `model` on `task`, resampled over speakers like the SVCCA scores."""
    by = accuracy.get(model, {}).get(task)
    if by is None:
        raise Missing(f"no per-speaker {task} test accuracy for the {model} model")
    speakers = np.asarray(by["speakers"])
    order = np.argsort(speakers, kind="stable")
    speakers = speakers[order]
    correct = np.asarray(by["correct"], float)[order]
    frames = np.asarray(by["frames"], float)[order]
    try:
        rate = rate_bootstrap(correct, frames, num_samples=num_samples, seed=seed,
                              min_speakers=min_speakers)
    except TooFewSpeakers as err:
        return _Statistic(float(correct.sum() / frames.sum()), None, None, str(err))
    return _Statistic(float(rate["point"]), rate["samples"], speakers)


def _fmt(stat: _Statistic) -> str:
    return f"{stat.point:.3f}"


def check_claims(scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 accuracy: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *,
                 top_fraction: float, keep_fraction: float, same_accuracy_margin: float,
                 fine_tunings: Sequence[str] = FINE_TUNINGS, num_samples: int = 200,
                 seed: int = 0, ci: float = 0.95, min_speakers: int = 5) -> list[dict]:
    """Every claim of the paper about `fine_tunings`, with its estimate, interval and verdict.

    Args:
      scores: scores[model][label] as from `report.score_store` (models by name,
        the pre-trained one as "pretrained"): "svcca" (L,), and with a bootstrap
        "svcca_samples" (B, L) and "speakers" (G,); {"skipped": reason} for a label
        set not scored.
      accuracy: accuracy[model][task] = {"speakers": (G,), "correct": (G,), "frames":
        (G,)}: per test speaker, frames predicted correctly and frames scored.
      top_fraction: the top layers' share; keep_fraction: a multi-task model keeps
        a label when its top-layer SVCCA exceeds this fraction of the mono-task one's;
      same_accuracy_margin: the equivalence margin on the accuracy difference.
      num_samples, seed: the speaker resamples of the accuracy (as in score_store).

    Returns:
      A list of dicts: claim, model, label, kind, verdict, estimate, ci ([low, high]
      or None), n_speakers, figures (the numbers behind it, as text), reason (why
      undecided without an interval, else None), and margin for same_accuracy.
    """
    out = []
    for spec in paper_claims(fine_tunings):
        model, label, kind = spec["model"], spec["label"], spec["kind"]
        row = dict(spec, verdict="undecided", estimate=None, ci=None, n_speakers=None,
                   figures="", reason=None)
        if kind == "same_accuracy":
            row["margin"] = same_accuracy_margin
        try:
            if kind in ("rises", "falls"):
                mine = _svcca_top(scores, model, label, top_fraction)
                base = _svcca_top(scores, PRETRAINED, label, top_fraction)
                stat = mine.minus(base)
                row["figures"] = (f"{label} top-layer SVCCA {_fmt(base)} pre-trained -> "
                                  f"{_fmt(mine)} {model}")
            elif kind == "keeps":
                mine = _svcca_top(scores, model, label, top_fraction)
                mono = _svcca_top(scores, label, label, top_fraction)
                stat = mine.minus(mono, keep_fraction)
                row["figures"] = (f"{label} top-layer SVCCA {_fmt(mono)} mono-task vs {_fmt(mine)} "
                                  f"{model}; holds above {keep_fraction:.0%} of mono")
            else:
                mine = _accuracy(accuracy, model, label, num_samples, seed, min_speakers)
                mono = _accuracy(accuracy, label, label, num_samples, seed, min_speakers)
                stat = mine.minus(mono)
                row["figures"] = (f"{label} accuracy {_fmt(mono)} mono-task vs {_fmt(mine)} "
                                  f"{model}; same within +-{same_accuracy_margin:.3f}")
        except Missing as missing:
            row["reason"] = str(missing)
            out.append(row)
            continue
        row["estimate"] = stat.point
        if stat.samples is None:
            row["reason"] = f"no interval: {stat.why_no_interval}"
        else:
            row["n_speakers"] = int(len(stat.speakers))
            finite = np.isfinite(stat.samples)
            if finite.sum() * 2 < len(stat.samples):
                row["reason"] = "no interval: most speaker resamples are degenerate"
            else:
                low, high = interval(stat.point, stat.samples[finite], ci)
                row["ci"] = [float(low), float(high)]
                row["verdict"] = verdict(kind, row["ci"], row.get("margin"))
        out.append(row)
    return out


def claims_table(claims: Sequence[dict]) -> list[list[str]]:
    """Rows (verdict, claim, estimate [95% CI], speakers, figures or reason) for the report."""
    rows = []
    for c in claims:
        estimate = "—" if c["estimate"] is None else f"{c['estimate']:+.3f}"
        if c["ci"] is not None:
            estimate += f" [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
        detail = "; ".join(part for part in (c["figures"], c["reason"]) if part)
        rows.append([f"**{c['verdict']}**", c["claim"], estimate, c["n_speakers"] or "—", detail])
    return rows


CLAIMS_HEADER = ("verdict", "claim", "estimate [95% CI]", "speakers", "figures")
