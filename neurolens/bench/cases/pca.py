"""Key-space PCA: time to the first 2-D view (and UMAP's first and warm calls, reported)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from neurolens.bench.measure import Case, check


def case(n: int, d: int, reps: int) -> Case:
    from neurolens.engine.keyspace import pca_2d
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        pca_2d(x)
        ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    detail = {}
    try:
        from neurolens.engine.keyspace import umap_2d
        small = x[: min(n, 2000)]
        t = time.perf_counter()
        umap_2d(small)
        detail["umap_s_first_call"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        umap_2d(small)
        detail["umap_s_warm"] = round(time.perf_counter() - t, 2)
        detail["umap_points"] = len(small)
    except Exception as e:  # noqa: BLE001
        detail["umap"] = f"unavailable: {e}"
    return Case(f"key-space PCA ({n} x {d}), time to first result", med, None, med, "<= 0.3",
                check(med, "<= 0.3"), detail=detail)
