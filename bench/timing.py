"""Shared by the benchmarks: how a call is timed."""

import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
