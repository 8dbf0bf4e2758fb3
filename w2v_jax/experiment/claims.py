"""The paper's claims, checked from the scores and the test accuracy."""

from __future__ import annotations

import ml_collections

from w2v_jax.experiment.tables import LABEL_SETS, PRETRAINED, test_accuracy, top_mean



def check_claims(scores: dict, accuracy: dict, c: ml_collections.ConfigDict,
                 split: str) -> list[dict]:
    """The paper's claims as holds / does not hold, each with its figures."""
    top = lambda model, label: (top_mean(scores[model][label]["svcca"], c.top_fraction)
                                if model in scores and label in scores[model] else None)
    claims = []

    def claim(text, holds, figures):
        if holds is not None:
            claims.append({"claim": text, "holds": bool(holds), "figures": figures})

    def compare(model, label, rises):
        mine, base = top(model, label), top(PRETRAINED, label)
        if mine is None or base is None:
            return
        verb = "rises" if rises else "falls"
        claim(f"fine-tuned for {model}: {label} SVCCA {verb} in the top layers",
              mine > base if rises else mine < base,
              f"{label} top-layer SVCCA {base:.3f} pre-trained -> {mine:.3f}")

    for model in scores:
        if model == PRETRAINED:
            continue
        tasks = model.split("+")
        for task in tasks:
            compare(model, task, rises=True)
        for label in LABEL_SETS:
            if label not in tasks and "+" not in model and not {label, *tasks} <= {"tone", "final"}:
                compare(model, label, rises=False)  # tone and finals share the syllable: not irrelevant
        if len(tasks) > 1:
            for task in tasks:
                multi, mono = top(model, task), top(task, task)
                if multi is not None and mono is not None:
                    claim(f"multi-task {model} keeps {task} as its mono-task model does",
                          multi >= c.keep_fraction * mono,
                          f"{task} top-layer SVCCA {mono:.3f} mono vs {multi:.3f} multi "
                          f"(holds at >= {c.keep_fraction:.0%} of mono)")
                a_multi = test_accuracy(accuracy.get(model, {}), task, split)
                a_mono = test_accuracy(accuracy.get(task, {}), task, split)
                if a_multi is not None and a_mono is not None:
                    claim(f"{task} accuracy is the same mono-task ({task}) and multi-task ({model})",
                          abs(a_multi - a_mono) <= c.same_accuracy,
                          f"{a_mono:.3f} vs {a_multi:.3f} (same within {c.same_accuracy:.3f})")
    return claims


def claims_text(claims: list[dict]) -> str:
    if not claims:
        return "No claim could be checked (missing models or label sets)."
    return "\n".join(f"- **{'holds' if c['holds'] else 'does not hold'}**: {c['claim']} "
                     f"({c['figures']})" for c in claims)


