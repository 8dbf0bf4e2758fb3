"""Plot helpers write readable PNG and SVG files; PCA matches numpy's SVD."""

import numpy as np
import pytest

from w2v_jax.analysis import plots
from w2v_jax.analysis.plots import pca_2d, plot_layer_projection


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save, kept for inspection."""
    kept, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: kept.append(fig) or save(fig, out))
    return kept


@pytest.mark.parametrize("num_layers", [4, 25])
def test_layer_panels_figure(tmp_path, figures, num_layers):
    layers = np.arange(num_layers)
    panels = ("tone", "final", "sex", "tone (probe)")
    curves = {p: {m: 0.3 + 0.4 * np.sin(layers / 8 + i) ** 2 for i, m in
                  enumerate(("pretrained", "tone", "sex"))} for p in panels}
    bands = {p: {m: (v - 0.05, v + 0.05) for m, v in by.items()} for p, by in curves.items()}
    chance = {p: (np.full(num_layers, 0.05), np.full(num_layers, 0.12)) for p in panels}
    paths = plots.plot_layer_panels(curves, tmp_path / "fig" / "svcca", intervals=bands,
                                    chance=chance, reference={"tone": 0.4, "sex": 0.7})
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(paths[0].read_bytes()) > 5000
    assert b"<svg" in paths[1].read_bytes()[:500]
    (fig,) = figures
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["chance (random features, permuted labels)", "log-mel"]
    assert set(labels[2:]) == {"pretrained", "tone", "sex"}
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(panels)
    width, height = fig.get_size_inches()
    assert width <= 12.5 and height <= 8  # a 2 x 3 grid, not a strip of panels
    for ax in visible:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_layer_panels_need_curves(tmp_path):
    with pytest.raises(ValueError, match=r"no score curves to plot for panel\(s\) \['empty'\]"):
        plots.plot_layer_panels({"full": {"m": np.ones(3)}, "empty": {}}, tmp_path / "svcca")


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) * [5, 3, 1, 0.5, 0.1] + 2
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    got = np.asarray(pca_2d(x.astype(np.float32)))
    np.testing.assert_allclose(np.abs(got), np.abs(u[:, :2] * s[:2]), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pca", "umap"])
def test_projection_scatter(tmp_path, method):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 150)
    x = rng.standard_normal((150, 6)) + 3 * labels[:, None]
    paths = plot_layer_projection(x.astype(np.float32), labels, tmp_path / method, method=method,
                                  label_names={0: "F", 1: "M"}, title=f"layer 12 {method}")
    assert all(len(p.read_bytes()) > 3000 for p in paths)
