"""Shared helpers: probe prompt sets into per-neuron statistics."""

from __future__ import annotations

import numpy as np

from neurolens.store import CaptureStore
from neurolens.store.stats import RunningStats


def probe_stats(lm, prompts: list[str], sites: list[str], batch_size: int = 16,
                edits=None, cancel=None, progress=None) -> dict[str, RunningStats]:
    """Per-site running statistics over all tokens of ``prompts``."""
    store = CaptureStore(keep_rows=False, stats=True, ring=1)
    lm.capture(prompts, sites, reduce="tokens", edits=edits, batch_size=batch_size, store=store,
               set_name="probe", cancel=cancel,
               progress=(lambda d, t: progress(d, t)) if progress else None)
    return {s: store.stats(s, "probe") for s in sites}


def probe_reduced(lm, prompts: list[str], sites: list[str], reduce: str, batch_size: int = 16,
                  edits=None, cancel=None, progress=None) -> dict[str, np.ndarray]:
    """Per-site matrix [n_prompts, width] of one reduced vector per prompt."""
    cap = lm.capture(prompts, sites, reduce=reduce, edits=edits, batch_size=batch_size,
                     cancel=cancel, progress=progress)
    return {s: np.concatenate(cap[s], axis=0) for s in sites}


def layer_sites(lm, kind: str, layers=None) -> list[str]:
    n = lm.n_layers
    layers = range(n) if layers is None else layers
    return [f"blocks.{layer}.{kind}" for layer in layers]
