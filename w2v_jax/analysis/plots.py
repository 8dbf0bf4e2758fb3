"""Figures: the paper's layer-wise score plot and PCA/UMAP scatters of one layer.

Functions take numpy arrays and write both PNG and SVG next to each other
(`out` is a path without suffix, or whose suffix is replaced). Matplotlib runs
with the Agg backend, so no display is needed.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Interval = tuple[np.ndarray, np.ndarray]


def _save(fig, out: str | Path) -> list[Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_layer_scores(scores: dict[str, dict[str, np.ndarray]], out: str | Path, *,
                      intervals: dict[str, dict[str, Interval]] | None = None,
                      ylabel: str = "SVCCA", title: str | None = None) -> list[Path]:
    """One panel per model, one line per label set: score against layer 0..L.

    scores[model][label_set] is an (L + 1,) array (layer 0 = CNN/projection
    output); intervals, if given, holds (low, high) arrays with the same keys,
    drawn as shaded bands. The y axis is fixed to [0, 1] so panels compare.
    """
    empty = [model for model, curves in scores.items() if not curves]
    if not scores or empty:
        raise ValueError(f"no score curves to plot for model(s) {empty or 'none given'}")
    models = list(scores)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), sharey=True,
                             squeeze=False)
    for ax, model in zip(axes[0], models):
        for label_set, values in scores[model].items():
            layers = np.arange(len(values))
            (line,) = ax.plot(layers, values, marker="o", markersize=3, label=label_set)
            band = (intervals or {}).get(model, {}).get(label_set)
            if band is not None:
                ax.fill_between(layers, band[0], band[1], color=line.get_color(), alpha=0.2)
        ax.set(title=model, xlabel="layer", ylim=(0, 1), xlim=(0, max(len(v) for v in
                                                                    scores[model].values()) - 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title, y=1.03)
    return _save(fig, out)


@jax.jit
def pca_2d(x: jax.Array) -> jax.Array:
    """Project x (N, D) onto its top two principal axes (eigh of the D x D covariance)."""
    xc = x - jnp.mean(x, axis=0)
    _, vec = jnp.linalg.eigh(xc.T @ xc)
    top = vec[:, ::-1][:, :2]
    # Fix each axis's sign (largest loading positive) so reruns give the same picture.
    top = top * jnp.sign(top[jnp.argmax(jnp.abs(top), axis=0), jnp.arange(2)])
    return xc @ top


def umap_2d(x: np.ndarray, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """UMAP embedding of x (N, D) into 2-D (umap-learn, seeded, so single-threaded)."""
    import umap  # imported here: it is slow to import (numba)

    return umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1).fit_transform(
        np.asarray(x))


def plot_scatter(points: np.ndarray, labels: np.ndarray, out: str | Path, *,
                 label_names: dict[int, str] | None = None, title: str | None = None,
                 axis_label: str = "") -> list[Path]:
    """2-D scatter of points (N, 2) coloured by integer labels (e.g. tone, sex)."""
    points, labels = np.asarray(points), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == c
        name = (label_names or {}).get(int(c), str(c))
        ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.6, color=cmap(i % cmap.N),
                   label=name, rasterized=True)
    ax.set(xlabel=f"{axis_label} 1", ylabel=f"{axis_label} 2", title=title or "")
    ax.legend(markerscale=3, fontsize="small", loc="best")
    return _save(fig, out)


def plot_layer_projection(x: np.ndarray, labels: np.ndarray, out: str | Path, *,
                          method: str = "pca", seed: int = 0, **kwargs) -> list[Path]:
    """PCA or UMAP of one layer's embeddings x (N, D), coloured by labels."""
    if method == "pca":
        points = np.asarray(pca_2d(jnp.asarray(x)))
        axis = "PC"
    elif method == "umap":
        points, axis = umap_2d(x, seed=seed), "UMAP"
    else:
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}")
    return plot_scatter(points, labels, out, axis_label=axis, **kwargs)
