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
    for site in sites:
        if step >= 0:
            ra = step_mean(store, set_names, site, step, a if view.diff else None)
            rb = step_mean(store, set_names, site, step, b) if view.diff else 0.0
            if ra is None or rb is None:
                return None
            rows.append(ra - rb)
        elif view.diff:
            sa, sb = store.stats(site, a), store.stats(site, b)
            if sa is None or sb is None or not sa.count or not sb.count:
                return None
            rows.append((sa.mean - sb.mean).astype(np.float32))
        else:
            st = store.stats(site)
            if st is None or not st.count:
                return None
            rows.append(st.mean.astype(np.float32))
    if not rows:
        return None
    width = max(len(r) for r in rows)   # UNet blocks differ in width: pad with zeros
    return np.stack([np.pad(r, (0, width - len(r))) for r in rows])
