"""Shared by the benchmarks: how a call is timed, and the ceiling a FLOP rate is read against."""

import statistics
import time

# bf16 dense peaks (TFLOP/s per chip), for MFU where a benchmark runs on an accelerator.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0}


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_flops(dtype: str = "float32", size: int = 2048) -> float:
    """FLOP/s of a plain jitted size^3 matmul on the default device, measured now: the honest
    ceiling of a matmul-bound step on this machine (a CPU's nominal peak is never reached)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    return 2 * size ** 3 / median_seconds(lambda: matmul(a).block_until_ready(), 5)


def device_peak_flops(override_tflops: float | None = None) -> float | None:
    """The default device's bf16 dense peak (FLOP/s) by its device_kind, or None on a CPU."""
    import jax

    if override_tflops:
        return override_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for name, tflops in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return tflops * 1e12
    return None


def rate_line(flops: float, seconds: float, matmul_peak: float, device_peak: float | None) -> str:
    """'N GFLOP/s, F of the measured matmul peak[, MFU M]' for one timed call of `flops`."""
    rate = flops / seconds
    line = f"{rate / 1e9:.0f} GFLOP/s, {rate / matmul_peak:.0%} of the matmul peak"
    if device_peak:
        line += f", MFU {rate / device_peak:.1%}"
    return line
