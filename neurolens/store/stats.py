"""Per-neuron running statistics (count, mean, std, min, max), mergeable across batches."""

from __future__ import annotations

import numpy as np


class RunningStats:
    """Chan/Welford running moments over rows of a [n, width] array, in float64."""

    __slots__ = ("count", "mean", "m2", "min", "max")

    def __init__(self, width: int):
        self.count = 0
        self.mean = np.zeros(width, np.float64)
        self.m2 = np.zeros(width, np.float64)
        self.min = np.full(width, np.inf)
        self.max = np.full(width, -np.inf)

    @property
    def width(self) -> int:
        return self.mean.shape[0]

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.ndim == 1:
            rows = rows[None]
        n = rows.shape[0]
        if n == 0:
            return
        r = rows.astype(np.float64, copy=False)
        b_mean = r.mean(axis=0)
        b_m2 = ((r - b_mean) ** 2).sum(axis=0)
        self._merge(n, b_mean, b_m2, r.min(axis=0), r.max(axis=0))

    def merge(self, other: RunningStats) -> None:
        if other.count:
            self._merge(other.count, other.mean, other.m2, other.min, other.max)

    def _merge(self, n, b_mean, b_m2, b_min, b_max) -> None:
        tot = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / tot)
        self.m2 = self.m2 + b_m2 + delta ** 2 * (self.count * n / tot)
        self.count = tot
        np.minimum(self.min, b_min, out=self.min)
        np.maximum(self.max, b_max, out=self.max)

    def var(self, ddof: int = 0) -> np.ndarray:
        if self.count - ddof <= 0:
            return np.zeros_like(self.mean)
        return self.m2 / (self.count - ddof)

    def std(self, ddof: int = 0) -> np.ndarray:
        return np.sqrt(self.var(ddof))

    def copy(self) -> RunningStats:
        c = RunningStats(self.width)
        c.count, c.mean, c.m2 = self.count, self.mean.copy(), self.m2.copy()
        c.min, c.max = self.min.copy(), self.max.copy()
        return c

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}count": np.array([self.count], np.int64), f"{prefix}mean": self.mean,
                f"{prefix}m2": self.m2, f"{prefix}min": self.min, f"{prefix}max": self.max}
