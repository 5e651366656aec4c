"""Thread-safe store of captured activations.

The engine's hooks append reduced numpy rows (one copy, already on the CPU); readers (views, the
Python API, methods) take snapshots. Three kinds of data are kept:

- rows per (site, prompt[, step]): in memory, or streamed to a safetensors file on disk when the
  store is opened with ``out=`` so memory stays bounded whatever the capture size;
- running statistics per (site, prompt set) and over everything (count, mean, std, min, max);
- a ring buffer of the latest rows per site, for live views.

Readers learn what changed through ``version`` and :meth:`take_dirty`.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from neurolens.store.shards import SafetensorsStreamWriter
from neurolens.store.stats import RunningStats

ALL = "__all__"


class CaptureStore:
    def __init__(self, *, keep_rows: bool = True, stats: bool = True, ring: int = 2048,
                 out: str | os.PathLike | None = None):
        self.keep_rows = keep_rows and out is None
        self.track_stats = stats
        self._ring_len = ring
        self._lock = threading.RLock()
        self._rows: dict[tuple[str, int], list[tuple[int | None, np.ndarray]]] = defaultdict(list)
        self._stats: dict[tuple[str, str], RunningStats] = {}
        self._ring: dict[str, deque] = {}
        self._ring_rows: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._writer = SafetensorsStreamWriter(out) if out is not None else None
        self._written: set[str] = set()
        self.out = Path(out) if out is not None else None
        self.set_of: dict[int, str] = {}
        self.tokens: dict[int, list[str]] = {}
        self.prompt_len: dict[int, int] = {}
        self.prompts: dict[int, str] = {}
        self.widths: dict[str, int] = {}
        self.version = 0
        self.n_rows = 0

    # -- writing -------------------------------------------------------------------------------
    def set_prompt(self, index: int, text: str, set_name: str | None = None) -> None:
        with self._lock:
            self.prompts[index] = text
            if set_name is not None:
                self.set_of[index] = set_name

    def add_tokens(self, index: int, tokens: list[str], prompt: bool = False) -> None:
        """Token strings of prompt ``index`` (``prompt=True`` marks the prompt's own tokens)."""
        with self._lock:
            self.tokens.setdefault(index, []).extend(tokens)
            if prompt:
                self.prompt_len[index] = self.prompt_len.get(index, 0) + len(tokens)
            self.version += 1

    def append(self, site: str, index: int, rows: np.ndarray, step: int | None = None) -> None:
        """Add rows [n, width] (or one row [width]) for prompt ``index`` at ``site``."""
        if rows.ndim == 1:
            rows = rows[None]
        part = None
        if self.track_stats:     # the batch's moments outside the lock: readers wait less
            part = RunningStats(rows.shape[-1])
            part.update(rows)
        with self._lock:
            self.widths.setdefault(site, rows.shape[-1])
            if self._writer is not None:
                name = f"{site}/{index}" if step is None else f"{site}/{index}/{step}"
                if name in self._written:  # a second chunk for the same prompt: number it
                    k = 1
                    while f"{name}#{k}" in self._written:
                        k += 1
                    name = f"{name}#{k}"
                self._writer.add(name, rows)
                self._written.add(name)
            elif self.keep_rows:
                self._rows[(site, index)].append((step, rows))
            if part is not None:
                self._stat(site, ALL, rows.shape[-1]).merge(part)
                s = self.set_of.get(index)
                if s is not None:
                    self._stat(site, s, rows.shape[-1]).merge(part)
            # ring of recent chunks (not rows: no per-row Python objects on the hot path)
            ring = self._ring.get(site)
            if ring is None:
                ring = self._ring[site] = deque()
                self._ring_rows[site] = 0
            ring.append(rows[-self._ring_len:])
            self._ring_rows[site] += len(ring[-1])
            while self._ring_rows[site] - len(ring[0]) >= self._ring_len:
                self._ring_rows[site] -= len(ring.popleft())
            self._dirty.add(site)
            self.version += 1
            self.n_rows += rows.shape[0]

    def _stat(self, site: str, set_name: str, width: int) -> RunningStats:
        key = (site, set_name)
        st = self._stats.get(key)
        if st is None:
            st = self._stats[key] = RunningStats(width)
        return st

    def close(self, metadata: dict[str, str] | None = None) -> Path | None:
        """Finish a streamed capture (writes the safetensors file)."""
        with self._lock:
            if self._writer is not None and not self._writer.closed:
                return self._writer.close(metadata)
        return self.out

    def abort(self) -> None:
        with self._lock:
            if self._writer is not None and not self._writer.closed:
                self._writer.abort()

    # -- reading -------------------------------------------------------------------------------
    def sites(self) -> list[str]:
        with self._lock:
            return list(self.widths)

    def rows(self, site: str, index: int, step: int | None = None) -> np.ndarray:
        """All rows of one prompt at one site (optionally one denoising step), in order."""
        with self._lock:
            if self._writer is not None:
                raise RuntimeError("rows of a streamed capture are read from its file "
                                   f"({self.out}), not from the store")
            chunks = [a for s, a in self._rows.get((site, index), []) if step is None or s == step]
            if not chunks:
                w = self.widths.get(site)
                if w is None:
                    raise KeyError(f"nothing captured at {site}")
                return np.zeros((0, w), np.float32)
            return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def steps(self, site: str, index: int) -> list[int]:
        with self._lock:
            return sorted({s for s, _ in self._rows.get((site, index), []) if s is not None})

    def stats(self, site: str, set_name: str | None = None) -> RunningStats | None:
        """A copy of the running statistics at ``site`` (over one prompt set, or everything)."""
        with self._lock:
            st = self._stats.get((site, set_name or ALL))
            return st.copy() if st is not None else None

    def means(self, sites: list[str], set_name: str | None = None) -> list[np.ndarray | None]:
        """Each site's running mean (over one prompt set, or everything; float64 copies), all
        taken under one hold of the lock; None where nothing was captured."""
        out: list[np.ndarray | None] = []
        with self._lock:
            for site in sites:
                st = self._stats.get((site, set_name or ALL))
                out.append(st.mean.copy() if st is not None and st.count else None)
        return out

    def set_names(self) -> list[str]:
        with self._lock:
            return sorted(set(self.set_of.values()))

    def latest(self, site: str, n: int | None = None) -> np.ndarray:
        """The newest rows at ``site`` (at most the ring size)."""
        with self._lock:
            ring = self._ring.get(site)
            if not ring:
                return np.zeros((0, self.widths.get(site, 0)), np.float32)
            items = list(ring)
        out = np.concatenate(items)[-self._ring_len:]
        return out[-n:] if n else out

    def take_dirty(self) -> set[str]:
        with self._lock:
            d, self._dirty = self._dirty, set()
            return d

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._stats.clear()
            self._ring.clear()
            self._ring_rows.clear()
            self._dirty.clear()
            self.set_of.clear()
            self.tokens.clear()
            self.prompt_len.clear()
            self.prompts.clear()
            self.n_rows = 0
            self.version += 1
