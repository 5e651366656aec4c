"""Key-space projections for the scatter view: PCA at once, UMAP when ready. numpy (+umap)."""

from __future__ import annotations

import numpy as np


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows to 2-D with PCA (randomized range finder when wide; exact when small)."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    if n == 0:
        return np.zeros((0, 2), np.float32)
    xc = x - x.mean(0, keepdims=True)
    if n < 3:
        out = np.zeros((n, 2), np.float32)
        out[:, 0] = xc @ (xc[0] / (np.linalg.norm(xc[0]) + 1e-12)) if n > 1 else 0
        return out
    if min(n, d) <= 512:
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        return (u[:, :2] * s[:2]).astype(np.float32)
    # randomized SVD: a few passes over the data, O(n*d*k)
    rng = np.random.default_rng(0)
    k = 10
    q = xc @ rng.standard_normal((d, k)).astype(np.float32)
    for _ in range(2):
        q, _ = np.linalg.qr(q)
        q = xc @ (xc.T @ q)
    q, _ = np.linalg.qr(q)
    b = q.T @ xc
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    return ((q @ ub[:, :2]) * s[:2]).astype(np.float32)


def umap_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP embedding (slow to start: numba compiles on first use). Small n falls back to PCA."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 5:
        return pca_2d(x)
    import umap  # noqa: PLC0415 - heavy import, only when asked

    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed,
                        init="random" if n < 10 else "spectral", n_jobs=1)
    return reducer.fit_transform(x).astype(np.float32)


def warm_up_umap() -> None:
    """Trigger numba compilation early, in a background thread."""
    umap_2d(np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))

