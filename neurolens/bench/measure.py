"""A case's result and the side-by-side timing every case uses."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
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


def fresh_process(module: str, args: list, *, timeout: float, env: dict | None = None,
                  prefix: list[str] | None = None, label: str = "") -> dict | None:
    """Run ``python -m module args`` in a fresh process (``prefix``: a command before it, e.g.
    ``nice``) and return the JSON object of its last stdout line (None when it printed
    nothing). A failure raises RuntimeError with ``label`` and the last line of its stderr."""
    cmd = list(prefix or []) + [sys.executable, "-m", module, *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=env if env is not None else os.environ.copy())
    if r.returncode != 0:
        raise RuntimeError(label + (r.stderr.strip().splitlines()[-1] if r.stderr.strip()
                                    else "failed"))
    out = r.stdout.strip()
    return json.loads(out.splitlines()[-1]) if out else None
