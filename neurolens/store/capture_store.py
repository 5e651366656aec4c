"""Thread-safe store of captured activations.

The engine's hooks append reduced numpy rows (one copy, already on the CPU); readers (views, the
Python API, methods) take snapshots. Three kinds of data are kept:

- rows per (site, prompt[, step]): in memory, or streamed to a safetensors file on disk when the
  store is opened with ``out=`` so memory stays bounded whatever the capture size;
- running statistics per (site, prompt set) and over everything (count, mean, std, min, max);
- a ring buffer of the latest rows per site, for live views.

Once a store holds ``compact`` bytes of rows (64 MB by default), rows whose values are all exact
in bfloat16 (a bf16 model's activations, spikes, zeros) are kept as their top 16 bits: half the
memory, and :meth:`CaptureStore.rows` gives back exactly the float32 values appended (a copy,
where small captures get the appended arrays themselves, with no unpacking cost). Other rows are
kept as they came. With ``spill=BYTES`` the rows past
that much memory go to a temporary file (:mod:`neurolens.store.spill`), the least recently
appended first, and are read back from it when asked for (the window keeps only the prompts
being run in memory). The ring holds its own references: keep it short where memory counts.

Readers learn what changed through ``version`` and :meth:`take_dirty`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, defaultdict, deque
from pathlib import Path

import numpy as np

from neurolens.store.shards import SafetensorsStreamWriter
from neurolens.store.spill import SpillFile, Spilled
from neurolens.store.stats import RunningStats

ALL = "__all__"


class Packed:
    """float32 rows exact in bfloat16, kept as their top 16 bits (``bits``: uint16)."""

    __slots__ = ("bits",)

    def __init__(self, bits: np.ndarray):
        self.bits = bits

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    def unpack(self) -> np.ndarray:
        return (self.bits.astype(np.uint32) << 16).view(np.float32)


def pack(rows: np.ndarray):
    """``rows`` as :class:`Packed` when every value is exact in bfloat16 (lossless), else
    ``rows`` unchanged."""
    if rows.dtype != np.float32 or not rows.size:
        return rows
    bits = np.ascontiguousarray(rows).view(np.uint32)
    if np.bitwise_and(bits, 0xFFFF).any():
        return rows
    return Packed((bits >> 16).astype(np.uint16))


def unpack(chunk) -> np.ndarray:
    return chunk.unpack() if isinstance(chunk, Packed) else chunk


class CaptureStore:
    def __init__(self, *, keep_rows: bool = True, stats: bool = True, ring: int = 2048,
                 out: str | os.PathLike | None = None, compact: int | None = 64 << 20,
                 spill: int | None = None, spill_dir: str | None = None):
        self.keep_rows = keep_rows and out is None
        self.compact = compact          # from this many bytes of rows: bf16-exact ones in 16 bits
        self.spill_limit = spill        # bytes of rows kept in memory (None: all)
        self._spill_dir = spill_dir
        self._spill: SpillFile | None = None
        self._mem = 0                   # bytes of rows in memory
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()   # by last append
        self.track_stats = stats
        self._ring_len = ring
        self._lock = threading.RLock()
        self._rows: dict[tuple[str, int],
                         list[tuple[int | None, np.ndarray | Packed | Spilled]]] = defaultdict(list)
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
        kept = rows
        if self.compact is not None and self._writer is None and self.keep_rows:
            held = self._mem + (self._spill.size if self._spill is not None else 0)
            if held >= self.compact:
                kept = pack(rows)
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
                self._rows[(site, index)].append((step, kept))
                self._mem += kept.nbytes
                if self.spill_limit is not None:
                    self._recent[(site, index)] = None
                    self._recent.move_to_end((site, index))
                    if self._mem > self.spill_limit:
                        self._spill_oldest()
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
            if len(kept) > self._ring_len:
                kept = (Packed(kept.bits[-self._ring_len:]) if isinstance(kept, Packed)
                        else kept[-self._ring_len:])
            ring.append(kept)
            self._ring_rows[site] += len(ring[-1])
            while self._ring_rows[site] - len(ring[0]) >= self._ring_len:
                self._ring_rows[site] -= len(ring.popleft())
            self._dirty.add(site)
            self.version += 1
            self.n_rows += rows.shape[0]

    def _spill_oldest(self) -> None:
        """Move rows to the spill file, least recently appended first, until an eighth of the
        limit is free (under the lock)."""
        if self._spill is None:
            self._spill = SpillFile(self._spill_dir)
        target = self.spill_limit * 7 // 8
        while self._mem > target and self._recent:
            key, _ = self._recent.popitem(last=False)
            self._rows[key] = self._spilled(self._rows[key])

    def _spilled(self, chunks: list) -> list:
        """``chunks`` with each run of in-memory chunks of one step and kind written out as
        one record."""
        out: list = []
        run: list = []

        def flush():
            if not run:
                return
            packed = isinstance(run[0][1], Packed)
            parts = [c.bits if packed else c for _, c in run]
            rec = self._spill.write(parts[0] if len(parts) == 1 else np.concatenate(parts),
                                    packed)
            self._mem -= sum(c.nbytes for _, c in run)
            out.append((run[0][0], rec))
            run.clear()
        for step, c in chunks:
            if isinstance(c, Spilled):
                flush()
                out.append((step, c))
                continue
            if run and (run[0][0] != step or type(run[0][1]) is not type(c)
                        or (not isinstance(c, Packed) and c.dtype != run[0][1].dtype)):
                flush()
            run.append((step, c))
        flush()
        return out

    def _loaded(self, chunk):
        """An in-memory chunk as it is; a spilled one read back (under the lock)."""
        if not isinstance(chunk, Spilled):
            return chunk
        data = self._spill.read(chunk)
        return Packed(data) if chunk.packed else data

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
            chunks = [self._loaded(a) for s, a in self._rows.get((site, index), [])
                      if step is None or s == step]
            if not chunks:
                w = self.widths.get(site)
                if w is None:
                    raise KeyError(f"nothing captured at {site}")
                return np.zeros((0, w), np.float32)
        return _joined(chunks)

    def row_bytes(self) -> int:
        """Bytes the kept rows take in memory (not counting those in the spill file)."""
        with self._lock:
            return self._mem

    def spilled_bytes(self) -> int:
        """Bytes of rows in the spill file."""
        with self._lock:
            return self._spill.size if self._spill is not None else 0

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
        out = _joined(items)[-self._ring_len:]
        return out[-n:] if n else out

    def take_dirty(self) -> set[str]:
        with self._lock:
            d, self._dirty = self._dirty, set()
            return d

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._mem = 0
            self._recent.clear()
            if self._spill is not None:
                self._spill.reset()
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


def _joined(chunks: list) -> np.ndarray:
    """Chunks (float32 arrays or :class:`Packed`) as one array; packed runs unpack once."""
    if all(isinstance(c, Packed) for c in chunks):
        bits = chunks[0].bits if len(chunks) == 1 else np.concatenate([c.bits for c in chunks])
        return Packed(bits).unpack()
    out = [unpack(c) for c in chunks]
    return out[0] if len(out) == 1 else np.concatenate(out)
