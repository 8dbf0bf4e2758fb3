"""Shared by the config files: the task argument ("tone", "final+sex", ...)."""

from w2v_jax.data import labels as L


def task_weights(arg: str) -> dict[str, float]:
    """'tone+sex' -> {'tone': 1.0, 'sex': 1.0}; the paper weighs tasks equally."""
    tasks = [t for t in arg.split("+") if t]
    unknown = [t for t in tasks if t not in L.TASKS]
    if not tasks or unknown:
        raise ValueError(f"config argument {arg!r}: give tasks joined by '+', from {L.TASKS}")
    return {task: 1.0 for task in tasks}
