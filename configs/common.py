"""Shared by the config files: the task argument ("tone", "finals+sex", ...)."""

from w2v_jax.data import labels as L

# The paper writes "finals"; the label task, configs/paper.py and the README write "final".
TASK_SPELLINGS = {"finals": "final"}


def task_weights(arg: str) -> dict[str, float]:
    """'tone+sex' -> {'tone': 1.0, 'sex': 1.0}; the paper weighs tasks equally."""
    tasks = [TASK_SPELLINGS.get(t, t) for t in arg.split("+") if t]
    unknown = [t for t in tasks if t not in L.TASKS]
    if not tasks or unknown:
        raise ValueError(f"config argument {arg!r}: give tasks joined by '+', from {L.TASKS} "
                         f"(also {', '.join(f'{k!r} for {v!r}' for k, v in TASK_SPELLINGS.items())})")
    return {task: 1.0 for task in tasks}
