"""A case's result and the side-by-side timing every case uses."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    subject: float               # median seconds (or the unit given)
    reference: float | None
    ratio: float | None
    budget: str                  # e.g. "<= 1.05"
    ok: bool | None
    unit: str = "s"
    detail: dict = field(default_factory=dict)


def check(ratio: float, budget: str) -> bool:
    """Whether ``ratio`` keeps ``budget`` ("<= 1.05", ">= 0.9")."""
    op, val = budget.split()
    return ratio <= float(val) if op == "<=" else ratio >= float(val)


def alternate(a, b, reps: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ``a()`` and ``b()``, timed in turns."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    # ABBA order: whichever runs second inherits the allocator state the first left behind
    # (large frees, page faults), which alone moved a ratio by 5% on this machine
    for i in range(reps):
        for f, acc in (((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)
