"""SVCCA layer sweep: our jitted kernel vs the plain numpy recipe, same data, one run.

The numpy recipe is what SVCCA code usually does: np.linalg.svd of the centred
float64 data (N x D), keep the top directions holding 99% of the variance, then
CCA with labels via QR/SVD. Ours works through the D x D Gram (float32 for
float32 embeddings) and float64 eigen-decompositions (x64 is enabled here).

    python -m bench.svcca                 # 25 layers of (20000 x 1024), 5 classes
    python -m bench.svcca --layers 3      # quick check

Each kernel's FLOP rate counts the symmetric Gram of [Xc | Y] only (N (D + C)^2 FLOPs a
layer; the D x D eigen-decompositions are left out) and is read against a plain jitted
float32 matmul measured in the same run.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from bench.timing import matmul_peak_flops  # noqa: E402
from w2v_jax.analysis import one_hot, svcca_layers  # noqa: E402


def numpy_svcca(x: np.ndarray, labels: np.ndarray, num_classes: int, keep: float = 0.99) -> float:
    """The plain recipe: N x D SVD in float64, then CCA of the top-k directions with one-hot labels."""
    xc = x.astype(np.float64)
    xc -= xc.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(energy, keep)) + 1
    y = np.eye(num_classes)[labels]
    qy, r = np.linalg.qr(y - y.mean(0))
    rank = int(np.sum(np.abs(np.diag(r)) > np.abs(r).max() * max(y.shape) * np.finfo(float).eps))
    # QR without pivoting: for a centred one-hot only the last column is dependent.
    rho = np.linalg.svd(u[:, :k].T @ qy[:, :rank], compute_uv=False)
    return float(np.mean(rho[: min(k, rank)]))


def synthetic_layers(layers: int, n: int, d: int, classes: int, seed: int):
    """Float32 embeddings shaped like wav2vec 2.0's: power-law spectra, a mean
    offset, three outlier dimensions, and class information that rises then falls."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    rot = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    h = np.empty((layers, n, d), np.float32)
    for i in range(layers):
        decay = 0.8 + 1.0 * i / max(layers - 1, 1)
        signal = 0.01 + 0.08 * np.sin(np.pi * (i + 0.5) / layers)
        scale = (np.arange(1, d + 1, dtype=np.float32) ** (-decay / 2)) / np.sqrt(2)
        noise = (rng.standard_normal((n, d), dtype=np.float32) * scale) @ rot.T
        # class means spread like the noise, so whitening does not make them trivial
        means = (rng.standard_normal((classes, d)).astype(np.float32) * scale * signal) @ rot.T
        h[i] = noise + means[labels] + 3.0 * rng.standard_normal(d).astype(np.float32)
        h[i, :, :3] *= 20.0
    return h, labels


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of fn() over `repeats` runs (after one warm-up/compile call)."""
    out = jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=25)
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the jitted sweep")
    p.add_argument("--batch-size", type=int, default=1, help="layers in flight (memory)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"numpy BLAS: {blas}; jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"{a.layers} layers of ({a.samples} x {a.dim}) float32, {a.classes} classes, keep=0.99")
    peak = matmul_peak_flops("float32")
    gram_flops = a.samples * (a.dim + a.classes) ** 2
    print(f"matmul peak: a plain jitted float32 matmul (2048^3) runs at {peak / 1e9:.0f} GFLOP/s here")
    h32, labels = synthetic_layers(a.layers, a.samples, a.dim, a.classes, a.seed)

    ref, ref_times = [], []
    for layer in h32:
        t0 = time.perf_counter()
        ref.append(numpy_svcca(layer, labels, a.classes))
        ref_times.append(time.perf_counter() - t0)
    ref = np.array(ref)
    ref_layer = float(np.median(ref_times))
    print(f"numpy recipe: median {ref_layer:.3f} s/layer; scores {ref.min():.4f}..{ref.max():.4f}")

    y = one_hot(jnp.asarray(labels), a.classes)
    for name, dtype in (("float32", np.float32), ("float64", np.float64)):
        h = jnp.asarray(h32.astype(dtype))
        sweep, out = timed(lambda: svcca_layers(h, y, batch_size=a.batch_size), a.repeats)
        per_layer = sweep / a.layers
        diff = float(np.max(np.abs(np.asarray(out) - ref)))
        print(f"kernel {name}: sweep median {sweep:.3f} s = {per_layer:.3f} s/layer; "
              f"ratio {ref_layer / per_layer:.1f}x faster; max |diff| {diff:.2e}; Gram "
              f"{gram_flops / per_layer / 1e9:.0f} GFLOP/s, {gram_flops / per_layer / peak:.0%} of the matmul peak")
        del h


if __name__ == "__main__":
    main()
