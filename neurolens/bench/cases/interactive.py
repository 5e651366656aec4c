"""Interactive capture: the latency of one short prompt, as the GUI asks for it."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check
from neurolens.bench.models import setup


def case(lm, reps: int) -> Case:
    """One 16-token prompt, all hook_post sites: per-call latency / plain forward."""
    ids, mask, rows, plain, sites = setup(lm, 1, 16, seed=1)

    def ours():
        lm.capture(rows, sites, batch_size=1)

    t_ours, t_plain = alternate(ours, plain, reps, warmup=5)
    r = t_ours / t_plain
    return Case("interactive capture (demo model, 1x16 tokens)", t_ours, t_plain, r, "<= 1.10",
                check(r, "<= 1.10"), detail={"per_call_ms": round(t_ours * 1e3, 3)})
