"""Selected neurons as ranges, not one entry per cell.

A rectangle over a map of 32 layers x 14,336 neurons selects 458,752 neurons; held as
``(site, index)`` pairs that is half a million Python tuples, and every union or membership
test walks them. :class:`NeuronRanges` holds one site's neurons as sorted, disjoint half-open
``[start, stop)`` ranges; :class:`Selection` maps sites to them. A selection still iterates,
compares, indexes and slices as the list of ``(site, index)`` pairs it stands for (each site's
neurons ascending, the sites in the order they were first selected), so the edits made from it
and the sets saved from it are what the list gave.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np


class NeuronRanges:
    """Sorted, disjoint, non-adjacent half-open ranges ``[start, stop)`` of neuron indices."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()):
        self._starts: list[int] = []
        self._stops: list[int] = []
        for a, b in ranges:
            self.add(a, b)

    @classmethod
    def from_indices(cls, indices: Iterable[int]) -> NeuronRanges:
        """The ranges of a set of indices (any order, repeats allowed)."""
        idx = np.unique(np.fromiter((int(i) for i in indices), dtype=np.int64))
        out = cls()
        if idx.size:
            breaks = np.flatnonzero(np.diff(idx) != 1) + 1
            out._starts = idx[np.r_[0, breaks]].tolist()
            out._stops = (idx[np.r_[breaks - 1, idx.size - 1]] + 1).tolist()
        return out

    def add(self, start: int, stop: int) -> None:
        """Add ``[start, stop)``, merging the ranges it overlaps or touches."""
        start, stop = int(start), int(stop)
        if stop <= start:
            return
        # ranges whose stop >= start and whose start <= stop overlap or touch the new one
        i = bisect.bisect_left(self._stops, start)
        j = bisect.bisect_right(self._starts, stop)
        if i < j:
            start = min(start, self._starts[i])
            stop = max(stop, self._stops[j - 1])
        self._starts[i:j] = [start]
        self._stops[i:j] = [stop]

    def union(self, other: NeuronRanges) -> NeuronRanges:
        out = self.copy()
        for a, b in other.ranges():
            out.add(a, b)
        return out

    def copy(self) -> NeuronRanges:
        out = NeuronRanges()
        out._starts, out._stops = list(self._starts), list(self._stops)
        return out

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._stops))

    def __contains__(self, i) -> bool:
        k = bisect.bisect_right(self._starts, int(i)) - 1
        return k >= 0 and i < self._stops[k]

    def __len__(self) -> int:
        return sum(b - a for a, b in zip(self._starts, self._stops))

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self._starts, self._stops):
            yield from range(a, b)

    def to_list(self) -> list[int]:
        """The indices, ascending (an edit's neuron list)."""
        return list(self)

    def __getitem__(self, k: int) -> int:
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("neuron index out of range")
        for a, b in zip(self._starts, self._stops):
            if k < b - a:
                return a + k
            k -= b - a
        raise IndexError(k)     # not reached

    def __eq__(self, other) -> bool:
        if isinstance(other, NeuronRanges):
            return self._starts == other._starts and self._stops == other._stops
        if isinstance(other, (list, tuple)):
            return self.to_list() == list(other)
        return NotImplemented

    __hash__ = None   # mutable

    def __repr__(self) -> str:
        return f"NeuronRanges({self.ranges()})"


class Selection:
    """``(site, index)`` pairs held as :class:`NeuronRanges` per site. ``last`` is the pair
    added last (the one the inspector shows)."""

    def __init__(self, pairs: Iterable[tuple[str, int]] = ()):
        self._sites: dict[str, NeuronRanges] = {}
        self.last: tuple[str, int] | None = None
        self.add(pairs)

    def add(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Add pairs (any order, repeats allowed)."""
        if isinstance(pairs, Selection):
            for site, a, b in pairs.ranges():
                self.add_range(site, a, b)
            if pairs.last is not None:
                self.last = pairs.last
            return
        by_site: dict[str, list[int]] = {}
        last = None
        for site, i in pairs:
            by_site.setdefault(site, []).append(int(i))
            last = (site, int(i))
        for site, idx in by_site.items():
            if len(idx) == 1:
                self.add_range(site, idx[0], idx[0] + 1)
            else:
                for a, b in NeuronRanges.from_indices(idx).ranges():
                    self.add_range(site, a, b)
        if last is not None:
            self.last = last

    def add_range(self, site: str, start: int, stop: int) -> None:
        """Add neurons ``start`` .. ``stop - 1`` of ``site``."""
        if stop <= start:
            return
        self._sites.setdefault(site, NeuronRanges()).add(start, stop)
        self.last = (site, int(stop) - 1)

    def copy(self) -> Selection:
        out = Selection()
        out._sites = {s: r.copy() for s, r in self._sites.items()}
        out.last = self.last
        return out

    def sites(self) -> list[str]:
        return [s for s, r in self._sites.items() if r]

    def of_site(self, site: str) -> NeuronRanges:
        return self._sites.get(site, NeuronRanges())

    def ranges(self) -> Iterator[tuple[str, int, int]]:
        """``(site, start, stop)`` of every range, site by site."""
        for s, r in self._sites.items():
            for a, b in r.ranges():
                yield s, a, b

    def by_site(self) -> dict[str, list[int]]:
        """Each site's neurons, ascending: the neuron lists of the edits a selection makes."""
        return {s: r.to_list() for s, r in self._sites.items() if r}

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for s, r in self._sites.items():
            for i in r:
                yield s, i

    def __len__(self) -> int:
        return sum(len(r) for r in self._sites.values())

    def __bool__(self) -> bool:
        return any(self._sites.values())

    def __contains__(self, pair) -> bool:
        site, i = pair
        r = self._sites.get(site)
        return r is not None and i in r

    def __getitem__(self, k):
        if isinstance(k, slice):
            if (k.start or 0) >= 0 and (k.stop is None or k.stop >= 0) and (k.step or 1) > 0:
                return list(islice(self, k.start, k.stop, k.step))
            return list(self)[k]
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("selection index out of range")
        for s, r in self._sites.items():
            m = len(r)
            if k < m:
                return s, r[k]
            k -= m
        raise IndexError(k)     # not reached

    def __eq__(self, other) -> bool:
        if isinstance(other, Selection):
            return list(self.ranges()) == list(other.ranges())
        if isinstance(other, (list, tuple)):
            return list(self) == [tuple(p) for p in other]
        return NotImplemented

    __hash__ = None   # mutable

    def __repr__(self) -> str:
        return f"Selection({list(self.ranges())})"
