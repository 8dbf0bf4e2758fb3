"""Plot helpers write readable PNG and SVG files; PCA matches numpy's SVD."""

import numpy as np
import pytest

from w2v_jax.analysis.plots import pca_2d, plot_layer_projection, plot_layer_scores


def test_layer_scores_figure(tmp_path):
    layers = np.arange(25)
    scores = {m: {"tone": 0.3 + 0.4 * np.sin(layers / 8), "sex": 0.8 - 0.02 * layers}
              for m in ("pretrained", "fine-tuned tone")}
    bands = {m: {"tone": (v["tone"] - 0.05, v["tone"] + 0.05)} for m, v in scores.items()}
    paths = plot_layer_scores(scores, tmp_path / "fig" / "svcca", intervals=bands)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000
    assert b"<svg" in paths[1].read_bytes()[:500]


def test_layer_scores_figure_needs_curves(tmp_path):
    with pytest.raises(ValueError, match=r"no score curves to plot for model\(s\) \['empty'\]"):
        plot_layer_scores({"full": {"tone": np.ones(3)}, "empty": {}}, tmp_path / "svcca")


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) * [5, 3, 1, 0.5, 0.1] + 2
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    got = np.asarray(pca_2d(x.astype(np.float32)))
    np.testing.assert_allclose(np.abs(got), np.abs(u[:, :2] * s[:2]), atol=1e-3)


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_projection_scatter(tmp_path, method):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 150)
    x = rng.standard_normal((150, 6)) + 3 * labels[:, None]
    paths = plot_layer_projection(x.astype(np.float32), labels, tmp_path / method, method=method,
                                  label_names={0: "F", 1: "M"}, title=f"layer 12 {method}")
    assert all(p.stat().st_size > 3000 for p in paths)
