"""Statistical top-k against ``torch.topk`` + scatter on the same rows."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check


def case(rows: int, d: int, reps: int) -> Case:
    import torch

    from neurolens.methods.statistical_topk import statistical_topk
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(0))
    k = int(0.08 * d)

    def ours():
        statistical_topk(x, 0.08)

    def theirs():
        v, i = torch.topk(x, k, dim=-1)
        torch.zeros_like(x).scatter_(-1, i, v)

    t_ours, t_torch = alternate(ours, theirs, reps)
    r = t_torch / t_ours
    return Case(f"statistical top-k vs torch.topk [{rows}, {d}], k=8%: speed-up", t_ours,
                t_torch, r, ">= 3.0", check(r, ">= 3.0"))
