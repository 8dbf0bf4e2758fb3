"""Figures: the paper's layer-wise score plot and PCA/UMAP scatters of one layer.

Functions take numpy arrays and write both PNG and SVG next to each other
(`out` is a path without suffix, or whose suffix is replaced). Matplotlib runs
with the Agg backend, so no display is needed.
"""

import io
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
from etils import epath

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Interval = tuple[np.ndarray, np.ndarray]
CHANCE = "chance (random features, permuted labels)"


def _save(fig, out: str | Path) -> list[Path]:
    """PNG and SVG of `fig` beside `out`, which may be local or a gs:// URL (etils.epath): each
    file is rendered in memory and written in one write."""
    out = epath.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        rendered = io.BytesIO()
        fig.savefig(rendered, format=p.suffix[1:], dpi=150, bbox_inches="tight")
        p.write_bytes(rendered.getvalue())
    plt.close(fig)
    return paths


def plot_layer_panels(curves: dict[str, dict[str, np.ndarray]], out: str | Path, *,
                      intervals: dict[str, dict[str, Interval]] | None = None,
                      chance: dict[str, Interval] | None = None,
                      reference: dict[str, float] | None = None, reference_name: str = "log-mel",
                      chance_name: str = CHANCE, ylabel: str = "SVCCA",
                      ylim: tuple[float, float] | None = (0, 1),
                      max_columns: int = 3) -> list[Path]:
    """The paper's layout: one panel per label set, one curve per model, score against layer.

    curves[panel][model] is an (L + 1,) array (layer 0 = the CNN features' projection);
    intervals[panel][model] (low, high) arrays, drawn as bands in the curve's colour;
    chance[panel] (low, high) arrays, a grey band (what random features and permuted
    labels score; chance_name names it in the legend); reference[panel] a level drawn
    as a dashed line (e.g. log-mel).
    Panels wrap into rows of max_columns; a model keeps its colour in every panel;
    one legend for the figure; integer layer ticks.
    """
    empty = [panel for panel, by in curves.items() if not by]
    if not curves or empty:
        raise ValueError(f"no score curves to plot for panel(s) {empty or 'none given'}")
    from matplotlib.ticker import MaxNLocator

    panels = list(curves)
    models = list(dict.fromkeys(m for by in curves.values() for m in by))
    # the pre-trained model in black, the reference the fine-tuned curves move from
    tuned = [m for m in models if m != "pretrained"]
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(tuned)}
    colours["pretrained"] = "black"
    cols = min(max_columns, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.1 * rows + 0.6), sharey=True,
                             squeeze=False)
    handles = {}
    for ax, panel in zip(axes.flat, panels):
        length = max(len(v) for v in curves[panel].values())
        layers = np.arange(length)
        band = (chance or {}).get(panel)
        if band is not None:
            handles[chance_name] = ax.fill_between(layers, band[0], band[1], color="0.6",
                                                   alpha=0.35, lw=0)
        level = (reference or {}).get(panel)
        if level is not None:
            handles[reference_name] = ax.axhline(level, color="0.2", ls="--", lw=1)
        for model, values in curves[panel].items():
            handles[model], = ax.plot(np.arange(len(values)), values, marker="o", markersize=3,
                                      color=colours[model])
            span = (intervals or {}).get(panel, {}).get(model)
            if span is not None:
                ax.fill_between(np.arange(len(values)), span[0], span[1], color=colours[model],
                                alpha=0.2, lw=0)
        ax.set(title=panel, xlabel="layer", xlim=(0, max(length - 1, 1)))
        if ylim:
            ax.set_ylim(*ylim)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(len(handles), 4), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(handles) - 1) // 4), 1, 1))
    return _save(fig, out)


def plot_interval_panels(panels: dict[str, tuple[list[str], dict[str, np.ndarray]]], out: str | Path,
                         *, ylabel: str) -> list[Path]:
    """One panel per factor: estimates with interval bars against the factor's values.

    panels[title] = (tick labels, {series: (3, n) array of estimate, low, high}); a series
    keeps its colour in every panel; a grey line at zero (the claims' boundary).
    """
    names = list(dict.fromkeys(name for _, by in panels.values() for name in by))
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), sharey=True,
                             squeeze=False)
    for ax, (title, (ticks, by)) in zip(axes.flat, panels.items()):
        x = np.arange(len(ticks))
        for name, (estimate, low, high) in by.items():
            ax.errorbar(x, estimate, yerr=[estimate - low, high - estimate], fmt="o-", capsize=3,
                        color=colours[name], label=name)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(x, ticks)
        ax.set(title=title)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize="small")
    fig.tight_layout()
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


def plot_training_curves(rows: list[dict], panels: dict[str, tuple[str, ...]], out: str | Path, *,
                         max_columns: int = 3) -> list[Path]:
    """A run's metrics.jsonl rows against step: panels[title] lists the metric keys drawn there
    (train/... as lines, dev/... as dots, since dev is measured every few hundred steps)."""
    cols = min(max_columns, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.0 * cols, 3.0 * rows_n), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if not points:
                continue
            steps, values = np.array(points).T
            style = dict(marker="o", ls="--", markersize=4) if key.startswith("dev/") else {}
            ax.plot(steps, values, label=key, **style)
        ax.set(title=title, xlabel="update")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, out)
