"""Per-site statistics kept on the model's device while a corpus streams through: for every
neuron the top-k (value, document, position) triples, a fixed-bin histogram with an underflow
and an overflow bin, the count of tokens above the firing threshold, the running min, max and
sum. Everything is updated inside the capture hook (no activation leaves the device); only the
small state is copied to the CPU once per chunk.

Per forward and site the activations are read in place, never copied without their pad cells:
on a CPU a block of consecutive real rows at a time (about 1 MB, so the passes work in the
cache: the bin index, one ``bincount`` for every neuron, the count above the threshold, the
sum, the test against each neuron's k-th value); elsewhere in one pass per batch, the pad
cells sent to a dropped bin and weighted 0. Once the top-k lists are full, only the values
above their neuron's k-th value (after the first batches, a few per neuron) are merged.

A (document, position) pair travels as one int64 code: ``doc << 32 | pos``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neurolens.engine.hooks import RunState

SHIFT = 32
#: rows per pass of the statistics: this many float32 values (1 MB) stay in the CPU's cache
BLOCK_FLOATS = 1 << 18
#: on a CPU, the statistics run over blocks of real rows (else one masked pass per batch)
SPLIT_CPU = True
_POS_MASK = (1 << SHIFT) - 1


def split_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes -> (doc, pos) int32 arrays; -1 (empty slot) stays -1 in both."""
    empty = codes < 0
    doc = np.where(empty, -1, codes >> SHIFT).astype(np.int32)
    pos = np.where(empty, -1, codes & _POS_MASK).astype(np.int32)
    return doc, pos


def join_codes(doc: np.ndarray, pos: np.ndarray) -> np.ndarray:
    doc, pos = doc.astype(np.int64), pos.astype(np.int64)
    return np.where(doc < 0, -1, (doc << SHIFT) | pos)


def batch_codes(state: RunState, seg_doc: torch.Tensor, seg_start: torch.Tensor,
                device) -> torch.Tensor:
    """The code of every cell [batch, seq] of the current forward (cached per forward)."""
    key = ("neuron_index.codes", str(device))
    got = state.extra.get(key)
    if got is None:
        rows = torch.as_tensor(state.prompt_index, device=device)
        pos = state.positions(device) + seg_start.to(device)[rows][:, None]
        got = (seg_doc.to(device)[rows][:, None] << SHIFT) | pos.clamp_min(0)
        state.extra[key] = got
    return got


def _flat(x: torch.Tensor, state: RunState, codes: torch.Tensor | None):
    """The real (non-pad) tokens as rows [n, width] (a view without padding) and their codes."""
    valid = state.valid(x.device)
    if valid is None:
        return x.reshape(-1, x.shape[-1]), None if codes is None else codes.reshape(-1)
    return x[valid], None if codes is None else codes[valid]


def pad_rows(state: RunState, device) -> torch.Tensor | None:
    """The flat row numbers of the forward's pad cells, or None (cached per forward)."""
    valid = state.valid(device)
    if valid is None:
        return None
    key = ("neuron_index.pad", str(device))
    got = state.extra.get(key)
    if got is None:
        got = state.extra[key] = (~valid).reshape(-1).nonzero().squeeze(1)
    return got


def _runs(n: int, pad: torch.Tensor | None) -> list[tuple[int, int]]:
    """The runs [start, end) of consecutive real rows among ``n`` rows."""
    if pad is None:
        return [(0, n)]
    real = np.ones(n + 2, np.int8)
    real[[0, -1]] = 0
    real[pad.cpu().numpy() + 1] = 0
    edges = np.flatnonzero(np.diff(real))
    return [(int(a), int(e)) for a, e in zip(edges[0::2], edges[1::2])]


class Scratch:
    """Work buffers reused by every site and forward of a build (one per name, dtype and
    device, grown to the largest block): the per-batch passes allocate nothing."""

    def __init__(self):
        self._bufs: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
        n = math.prod(shape)
        key = (name, dtype, str(device))
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = self._bufs[key] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)


class SiteAccumulator:
    """The running statistics of one site. ``lo``/``step`` fix the histogram's bins per neuron
    (``bins`` regular bins from ``lo`` in steps of ``step``, plus under- and overflow)."""

    def __init__(self, k: int, bins: int, threshold: float, lo: np.ndarray, step: np.ndarray,
                 seg_doc: torch.Tensor, seg_start: torch.Tensor, saved: dict | None = None,
                 scratch: Scratch | None = None):
        self.k, self.bins, self.threshold = k, bins, float(threshold)
        self.lo_np, self.step_np = lo.astype(np.float32), step.astype(np.float32)
        self.width = len(lo)
        self.seg_doc, self.seg_start = seg_doc, seg_start
        self.saved = saved                  # numpy state of a previous run (resume / extend)
        self.scratch = scratch or Scratch()
        self.t: dict[str, torch.Tensor] | None = None

    def _init(self, device) -> None:
        W, k, nb = self.width, self.k, self.bins + 2
        s = self.saved
        if s is not None:
            t = {"values": torch.from_numpy(s["top_values"]),
                 "codes": torch.from_numpy(join_codes(s["top_doc"], s["top_pos"])),
                 "hist": torch.from_numpy(s["hist"].astype(np.int64).reshape(-1)),
                 "above": torch.from_numpy(s["above"].astype(np.int64)),
                 "vmin": torch.from_numpy(s["min"]), "vmax": torch.from_numpy(s["max"]),
                 "sum": torch.from_numpy(s["sum"])}
        else:
            t = {"values": torch.full((k, W), float("-inf")),
                 "codes": torch.full((k, W), -1, dtype=torch.long),
                 "hist": torch.zeros(W * nb, dtype=torch.long),
                 "above": torch.zeros(W, dtype=torch.long),
                 # lo is the first chunk's min: the min moves only below the bins
                 "vmin": torch.from_numpy(self.lo_np.copy()),
                 "vmax": torch.full((W,), float("-inf")),
                 "sum": torch.zeros(W, dtype=torch.float64)}
        t["lo"] = torch.from_numpy(self.lo_np)
        t["inv"] = torch.from_numpy((1.0 / self.step_np).astype(np.float32))
        # the flat histogram index of (neuron, bin) is neuron * nb + bin; exact in float32
        # while W * nb < 2**24, else added as integers
        self.float_offsets = W * nb < (1 << 24)
        off = torch.arange(W, dtype=torch.long) * nb + 1
        t["off"] = off.float() if self.float_offsets else off
        self.t = {k_: v.to(device) for k_, v in t.items()}

    def __call__(self, x: torch.Tensor, state: RunState):
        codes = batch_codes(state, self.seg_doc, self.seg_start, x.device)
        x = x.detach()
        self.update(x.reshape(-1, x.shape[-1]), codes.reshape(-1), pad_rows(state, x.device))

    def update(self, flat: torch.Tensor, fc: torch.Tensor,
               pad: torch.Tensor | None = None) -> None:
        """Add rows [n, width] with their (document, position) codes [n]; ``pad``: the row
        numbers of pad cells among them, which count nowhere."""
        if flat.shape[0] == 0 or (pad is not None and pad.numel() == flat.shape[0]):
            return None
        if self.t is None:
            self._init(flat.device)
        t = self.t
        if flat.dtype != torch.float32:
            flat = flat.float()
        if pad is not None and pad.numel() == 0:
            pad = None
        n, W = flat.shape
        nbins = t["hist"].numel()
        cnt = torch.zeros(nbins, dtype=torch.long, device=flat.device)
        above = torch.zeros(W, dtype=torch.float64, device=flat.device)
        total = torch.zeros(W, dtype=torch.float64, device=flat.device)
        low = torch.full((W,), float("inf"), device=flat.device)   # min where below the bins
        kth = t["values"][-1]
        full = bool(torch.isfinite(kth).all())     # every running top-k list is full
        hits = []
        if flat.device.type == "cpu" and SPLIT_CPU:
            # a block of real rows at a time (pad rows lie between blocks): each pass below
            # then reads and writes the cache, not memory (a third of the time of whole-batch
            # passes), and reads no pad cell
            R = max(1, BLOCK_FLOATS // W)
            for a, e in _runs(n, pad):
                for r0 in range(a, e, R):
                    got = self._block(flat[r0:min(e, r0 + R)], None, cnt, above, total, low,
                                      kth if full else None)
                    if got is not None:
                        hits.append(got.nonzero().squeeze(1) + r0)
        else:    # one pass over the batch; pad rows weigh 0
            w = None if pad is None else torch.ones(n, dtype=torch.float32,
                                                    device=flat.device).index_fill_(0, pad, 0.0)
            got = self._block(flat, w, cnt, above, total, low, kth if full else None)
            if got is not None:
                hits.append(got.nonzero().squeeze(1))
        t["hist"] += cnt
        t["above"] += above.round_().long()
        t["sum"] += total
        if full:
            self._top_sparse(flat, fc, torch.cat(hits) if hits else fc[:0])
        else:
            self._top_dense(flat, fc, pad)
        # the max is the top-1; the min only moves below the bins (``low``)
        torch.maximum(t["vmax"], t["values"][0], out=t["vmax"])
        torch.minimum(t["vmin"], low, out=t["vmin"])
        return None

    def _block(self, x: torch.Tensor, w: torch.Tensor | None, cnt: torch.Tensor,
               above: torch.Tensor, total: torch.Tensor, low: torch.Tensor,
               kth: torch.Tensor | None) -> torch.Tensor | None:
        """Histogram, count above the threshold and sum of a block of rows ``x`` (``w``: 1 for
        a real row, 0 for a pad row; None: all real), added to ``cnt``, ``above``, ``total``;
        the minimum into ``low`` when something fell below the bins; with ``kth`` (the k-th
        values of full top-k lists), which real rows beat some k-th value [rows] (only they
        can enter a list)."""
        t = self.t
        n, W = x.shape
        nbins = cnt.numel()
        # bin = floor((x - lo) / step), clamped to [-1, bins] (under- and overflow), then
        # offset by neuron: one bincount for every neuron at once
        # (x - lo) first: a value equal to lo (the first chunk's min) lands exactly on 0
        f = self.scratch.get("f", (n, W), torch.float32, x.device)
        torch.sub(x, t["lo"], out=f)
        f.mul_(t["inv"]).floor_().clamp_(-1, self.bins)
        if self.float_offsets:   # int32 indices: half the bytes of int64 to write and read
            idx = self.scratch.get("i32", (n, W), torch.int32, x.device)
            idx.copy_(f.add_(t["off"]))
        else:
            idx = self.scratch.get("i64", (n, W), torch.long, x.device)
            idx.copy_(f).add_(t["off"])
        if w is not None:        # pad cells go to one extra bin, dropped
            idx.masked_fill_(w[:, None] == 0, nbins)
        got = torch.bincount(idx.reshape(-1), minlength=nbins + 1)[:nbins]
        cnt += got
        if bool(got[::self.bins + 2].any()):      # underflow: the min moved
            real = x if w is None else torch.where(w[:, None] > 0, x, float("inf"))
            torch.minimum(low, real.amin(0), out=low)
        # a float count of 0/1 is exact (blocks have far fewer than 2**24 rows); pad rows
        # weigh 0 (a matrix-vector product instead of a copy without them)
        gt = torch.gt(x, self.threshold, out=f)
        if w is None:
            above += gt.sum(0)
            total += x.sum(0)
        else:
            above += w @ gt
            total += w @ x
        if kth is None:
            return None
        hit = torch.gt(x, kth, out=f).amax(1) > 0
        return hit if w is None else hit & (w > 0)

    def _top_sparse(self, flat: torch.Tensor, codes: torch.Tensor, rows: torch.Tensor) -> None:
        """Merge into full top-k lists: of ``rows`` (those that beat some k-th value; after the
        first batches, few), the values above their neuron's k-th value."""
        if rows.numel() == 0:
            return
        sub = flat.index_select(0, rows)
        r, c = (sub > self.t["values"][-1]).nonzero(as_tuple=True)
        self._merge(c, sub[r, c], codes.index_select(0, rows)[r])

    def _merge(self, col: torch.Tensor, val: torch.Tensor, code: torch.Tensor) -> None:
        """Merge entries (neuron, value, code) into the full top-k lists: per neuron they touch,
        its k values and the new ones sorted by value (the old ones first among equal values),
        the first k kept."""
        t, k = self.t, self.k
        dev = col.device
        ucols = torch.unique(col)                         # sorted
        m = ucols.numel()
        vals = torch.cat([t["values"].index_select(1, ucols).reshape(-1), val])
        cods = torch.cat([t["codes"].index_select(1, ucols).reshape(-1), code])
        slot = torch.cat([torch.arange(m, device=dev).repeat(k),
                          torch.searchsorted(ucols, col)])
        order = torch.argsort(vals, descending=True, stable=True)
        order = order[torch.argsort(slot[order], stable=True)]
        s = slot[order]
        rank = torch.arange(s.numel(), device=dev) - torch.searchsorted(
            s, torch.arange(m, device=dev))[s]
        keep = rank < k                                   # exactly k per neuron
        order, rank, s = order[keep], rank[keep], s[keep]
        new_v = torch.empty(k, m, dtype=vals.dtype, device=dev)
        new_c = torch.empty(k, m, dtype=cods.dtype, device=dev)
        new_v[rank, s] = vals[order]
        new_c[rank, s] = cods[order]
        t["values"].index_copy_(1, ucols, new_v)
        t["codes"].index_copy_(1, ucols, new_c)

    def _top_dense(self, flat: torch.Tensor, codes: torch.Tensor,
                   pad: torch.Tensor | None) -> None:
        """``topk`` of every neuron over the batch, merged with the running lists."""
        t = self.t
        if pad is not None:
            flat, codes = flat.index_fill(0, pad, float("-inf")), codes.index_fill(0, pad, -1)
        n = flat.shape[0]
        if n > 256:   # topk along the last dimension of a contiguous copy beats dim 0
            v, i = torch.topk(flat.t().contiguous(), min(self.k, n), dim=1)
            v, i = v.t(), i.t()
        else:
            v, i = torch.topk(flat, min(self.k, n), dim=0)
        top = torch.topk(torch.cat([t["values"], v]), self.k, dim=0)
        t["values"] = top.values
        t["codes"] = torch.cat([t["codes"], codes[i]]).gather(0, top.indices)

    def arrays(self) -> dict[str, np.ndarray]:
        """The state as numpy arrays (the chunk file's tensors of this site)."""
        if self.t is None:   # nothing ran yet (an empty chunk): the saved or empty state
            self._init(torch.device("cpu"))
        t = {k: v.cpu().numpy() for k, v in self.t.items()}
        doc, pos = split_codes(t["codes"])
        hist = t["hist"].reshape(self.width, self.bins + 2)
        hist = hist.astype(np.int32) if hist.max(initial=0) < 2**31 - 1 else hist
        return {"top_values": t["values"].astype(np.float32), "top_doc": doc, "top_pos": pos,
                "hist": hist, "above": t["above"], "min": t["vmin"].astype(np.float32),
                "max": t["vmax"].astype(np.float32), "sum": t["sum"],
                "lo": self.lo_np, "step": self.step_np}


class RangeProbe:
    """Per-neuron min and max of a site over the first chunk, which fixes the bins. It also
    keeps the chunk's rows (``kept``: (rows, codes) per forward, on the device), so the
    statistics of the first chunk come from the same forward, not a second one."""

    def __init__(self, seg_doc: torch.Tensor, seg_start: torch.Tensor):
        self.vmin: torch.Tensor | None = None
        self.vmax: torch.Tensor | None = None
        self.seg_doc, self.seg_start = seg_doc, seg_start
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, state: RunState):
        codes = batch_codes(state, self.seg_doc, self.seg_start, x.device)
        flat, fc = _flat(x.detach(), state, codes)
        if flat.shape[0] == 0:
            return None
        if flat.data_ptr() == x.data_ptr() or flat.dtype != torch.float32:
            flat = flat.float().clone()      # the model's own tensor: keep a copy
        self.kept.append((flat, fc))
        mn, mx = flat.amin(0), flat.amax(0)
        self.vmin = mn if self.vmin is None else torch.minimum(self.vmin, mn)
        self.vmax = mx if self.vmax is None else torch.maximum(self.vmax, mx)
        return None

    def bins(self, width: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """(lo, step) per neuron: ``bins`` bins over [min, max] of what was seen, the top edge
        nudged up so the maximum falls in the last regular bin; a constant neuron gets bins of
        width 1e-3 (or 1e-3 of its value) from that value."""
        if self.vmin is None:
            lo, hi = np.zeros(width, np.float64), np.ones(width, np.float64)
        else:
            lo = self.vmin.double().cpu().numpy()
            hi = self.vmax.double().cpu().numpy()
        span = hi - lo
        flat = span <= 1e-12 * np.maximum(1.0, np.abs(lo))
        span = np.where(flat, 1e-3 * np.maximum(1.0, np.abs(lo)) * bins, span)
        step = span / bins * (1 + 1e-5)   # margin for float32 rounding of (x - lo) / step
        return lo.astype(np.float32), step.astype(np.float32)
