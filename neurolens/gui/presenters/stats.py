"""The layer map's statistic over a store: one row per site, the mean activation or the
difference of two prompt sets' means (over every captured row, or at one denoising step)."""

from __future__ import annotations

import numpy as np

from neurolens.store import CaptureStore


def step_mean(store: CaptureStore, set_names, site: str, step: int,
              set_name: str | None = None) -> np.ndarray | None:
    """Diffusion: mean over the prompts (of one set) of a block's activations at one step."""
    vals = []
    for i, s in enumerate(set_names):
        if set_name is not None and s != set_name:
            continue
        try:
            vals.append(store.rows(site, i, step=step).reshape(-1))
        except KeyError:
            continue
    return np.mean(vals, axis=0).astype(np.float32) if vals else None


def stat_matrix(store: CaptureStore, sites: list[str], set_names, view,
                step: int = -1) -> np.ndarray | None:
    """One row per site: the mean activation, or the difference of two sets' means (over every
    captured row, or at one denoising step); rows of different widths are padded with zeros."""
    rows = []
    a, b = view.set_a, view.set_b
    if step >= 0:
        for site in sites:
            ra = step_mean(store, set_names, site, step, a if view.diff else None)
            rb = step_mean(store, set_names, site, step, b) if view.diff else 0.0
            if ra is None or rb is None:
                return None
            rows.append(ra - rb)
    else:   # the running means only (not the other moments), under one hold of the lock
        ma = store.means(sites, a if view.diff else None)
        mb = store.means(sites, b) if view.diff else [0.0] * len(sites)
        if any(x is None for x in ma) or any(x is None for x in mb):
            return None
        rows = [(x - y).astype(np.float32) for x, y in zip(ma, mb)]
    if not rows:
        return None
    width = max(len(r) for r in rows)   # UNet blocks differ in width: pad with zeros
    return np.stack([np.pad(r, (0, width - len(r))) for r in rows])
