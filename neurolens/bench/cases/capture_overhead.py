"""Capture overhead: all hook_post sites per token, neurolens capture / plain forward."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check
from neurolens.bench.models import setup


def case(lm, label: str, batch: int, seq: int, reps: int) -> Case:
    """All hook_post sites per token: neurolens capture / plain forward (same token ids)."""
    ids, mask, rows, plain, sites = setup(lm, batch, seq)

    def ours():
        cap = lm.capture(rows, sites, batch_size=batch)
        assert cap.store.n_rows == batch * seq * len(sites)

    t_ours, t_plain = alternate(ours, plain, reps)
    r = t_ours / t_plain
    nbytes = batch * seq * sum(lm.sites()[s] for s in sites) * 4
    return Case(f"capture overhead ({label}, {batch}x{seq} tokens, {len(sites)} sites)",
                t_ours, t_plain, r, "<= 1.05", check(r, "<= 1.05"),
                detail={"captured_MB": round(nbytes / 1e6, 1),
                        "note": "capture keeps the projections' input tensors (no copy) and "
                                "stops after the last captured site (no LM head); the "
                                "reference is the full plain forward"})
