"""Shared helpers: probe prompt sets into per-neuron statistics."""

from __future__ import annotations

import numpy as np

from neurolens.spec.sites import site_name
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
    return [site_name(layer, kind) for layer in layers]


def skill_texts(rows) -> list[str]:
    """A prompt set's texts as the model uses them: each row's prompt followed by its answer
    where it has one (JSONL rows of a prompt set, or plain strings kept as they are).

    A skill is exercised where its answer is written, not only where its question is read.
    Neuron Adjust probes its forget and retain sets this way, because its intervention acts on
    every token the model sees, the answer's included. NeuroStrike probes its benign set this
    way, so that a neuron the benign answers need is not taken for a safety neuron; its harmful
    requests are probed alone, as the refusal is decided there.
    """
    out = []
    for r in rows:
        if isinstance(r, str):
            out.append(r)
        else:
            out.append(r["prompt"] + (r.get("answer") or ""))
    return out

