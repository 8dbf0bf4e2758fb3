"""Independent numpy references for the analysis tests (N x D SVDs, no moments).

Written from the definitions, not from w2v_jax.analysis: SVCCA via an SVD of the
centred data and CCA via SVDs of orthonormal bases; google/svcca's
get_cca_similarity transcribed step by step; PWCCA from explicit canonical
variates; linear CKA from N x N kernel matrices (HSIC).
"""

import numpy as np

EPS64 = np.finfo(np.float64).eps


def _basis(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis (N x rank) of the column space of centred a."""
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, s > s[0] * max(a.shape) * EPS64]


def top_k(x: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """(U_k, S_k) of centred x: the fewest directions reaching `keep` of the variance."""
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    frac = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(frac, keep)) + 1
    k = min(k, int(np.sum(s > s[0] * max(xc.shape) * EPS64)))
    return u[:, :k], s[:k]


def svcca_rank(x, y, keep=0.99) -> float:
    """Mean of the min(k, rank y) canonical correlations of x's top-k directions and y."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    qx, _ = top_k(x, keep)
    qy = _basis(y - y.mean(0))
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
    return float(np.mean(rho[: min(qx.shape[1], qy.shape[1])]))


def kept_dims(x, keep=0.99) -> int:
    return top_k(np.asarray(x, np.float64), keep)[0].shape[1]


def get_cca_similarity_mean(acts1, acts2, epsilon=0.0) -> float:
    """google/svcca cca_core.get_cca_similarity (neurons x datapoints inputs),
    transcribed; returns np.mean(cca_coef1), the SVCCA number its tutorials report."""
    numx, numy = acts1.shape[0], acts2.shape[0]
    covariance = np.cov(acts1, acts2)
    sigmaxx = covariance[:numx, :numx]
    sigmaxy = covariance[:numx, numx:]
    sigmayy = covariance[numx:, numx:]
    xmax, ymax = np.max(np.abs(sigmaxx)), np.max(np.abs(sigmayy))
    sigmaxx /= xmax
    sigmayy /= ymax
    sigmaxy /= np.sqrt(xmax * ymax)
    # remove_small
    x_idxs = np.abs(np.diagonal(sigmaxx)) >= epsilon
    y_idxs = np.abs(np.diagonal(sigmayy)) >= epsilon
    sigmaxx = sigmaxx[x_idxs][:, x_idxs]
    sigmaxy = sigmaxy[x_idxs][:, y_idxs]
    sigmayy = sigmayy[y_idxs][:, y_idxs]
    # compute_ccas
    sigmaxx += epsilon * np.eye(sigmaxx.shape[0])
    sigmayy += epsilon * np.eye(sigmayy.shape[0])
    inv_xx, inv_yy = np.linalg.pinv(sigmaxx), np.linalg.pinv(sigmayy)

    def sqrtm(a):
        w, v = np.linalg.eigh(a)
        return v @ np.diag(np.sqrt(w)) @ v.T

    arr = sqrtm(inv_xx) @ sigmaxy @ sqrtm(inv_yy)
    s = np.abs(np.linalg.svd(arr, compute_uv=False))
    return float(np.mean(s))


def svcca_google(x, y, keep=0.99, epsilon=1e-10) -> float:
    """SVCCA as google's tutorial runs it: x_k = U_k S_k, then get_cca_similarity."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    u, s = top_k(x, keep)
    return get_cca_similarity_mean((u * s).T, y.T.copy(), epsilon)


def pwcca(x, y, keep=1.0) -> float:
    """Projection-weighted CCA with weights from x: alpha_i = sum_j |<h_i, x_j>|."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    qx, _ = top_k(x, keep)
    qy = _basis(y - y.mean(0))
    a, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    m = min(qx.shape[1], qy.shape[1])
    h = qx @ a[:, :m]  # unit-norm canonical variates of x
    alpha = np.abs(h.T @ (x - x.mean(0))).sum(axis=1)
    return float(np.sum(alpha * rho[:m]) / np.sum(alpha))


def cka(x, y) -> float:
    """Linear CKA through N x N Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]
    hmat = np.eye(n) - 1.0 / n
    k, l = hmat @ x @ x.T @ hmat, hmat @ y @ y.T @ hmat
    return float(np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l)))
