"""Per-site statistics kept on the model's device while a corpus streams through: for every
neuron the top-k (value, document, position) triples, a fixed-bin histogram with an underflow
and an overflow bin, the count of tokens above the firing threshold, the running min, max and
sum. Everything is updated inside the capture hook (no activation leaves the device); only the
small state is copied to the CPU once per chunk.

A (document, position) pair travels as one int64 code: ``doc << 32 | pos``.
"""

from __future__ import annotations

import numpy as np
import torch

from neurolens.engine.hooks import RunState

SHIFT = 32
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


class SiteAccumulator:
    """The running statistics of one site. ``lo``/``step`` fix the histogram's bins per neuron
    (``bins`` regular bins from ``lo`` in steps of ``step``, plus under- and overflow)."""

    def __init__(self, k: int, bins: int, threshold: float, lo: np.ndarray, step: np.ndarray,
                 seg_doc: torch.Tensor, seg_start: torch.Tensor, saved: dict | None = None):
        self.k, self.bins, self.threshold = k, bins, float(threshold)
        self.lo_np, self.step_np = lo.astype(np.float32), step.astype(np.float32)
        self.width = len(lo)
        self.seg_doc, self.seg_start = seg_doc, seg_start
        self.saved = saved                  # numpy state of a previous run (resume / extend)
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
        flat, fc = _flat(x.detach(), state, codes)
        self.update(flat, fc)

    def update(self, flat: torch.Tensor, fc: torch.Tensor) -> None:
        """Add real tokens' rows [n, width] with their (document, position) codes [n]."""
        if flat.shape[0] == 0:
            return None
        if self.t is None:
            self._init(flat.device)
        t = self.t
        if flat.dtype != torch.float32:
            flat = flat.float()
        self._top(flat, fc)
        # bin = floor((x - lo) / step), clamped to [-1, bins] (under- and overflow), then
        # offset by neuron: one bincount for every neuron at once
        # (x - lo) first: a value equal to lo (the first chunk's min) lands exactly on 0
        b = (flat - t["lo"]).mul_(t["inv"]).floor_().clamp_(-1, self.bins)
        if self.float_offsets:   # int32 indices: half the bytes of int64 to write and read
            idx = b.add_(t["off"]).int()
        else:
            idx = b.long().add_(t["off"])
        cnt = torch.bincount(idx.reshape(-1), minlength=t["hist"].numel())
        t["hist"] += cnt
        # a float sum of 0/1 is exact below 2**24 rows, and faster than a bool -> int64 sum
        t["above"] += (flat > self.threshold).float().sum(0).long()
        t["sum"] += flat.sum(0).double()
        # the max is the top-1; the min only moves when something fell below the bins
        torch.maximum(t["vmax"], t["values"][0], out=t["vmax"])
        if bool(cnt[::self.bins + 2].any()):
            torch.minimum(t["vmin"], flat.amin(0), out=t["vmin"])
        return None

    def _top(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """Merge the rows into the running top-k. Only rows with a value above some neuron's
        current k-th value can enter it; once the running lists are full (after the first
        batches) those are few, and only they go through ``topk``."""
        t = self.t
        kth = t["values"][-1]
        if bool(torch.isfinite(kth).all()):
            rows = (flat > kth).any(1).nonzero().squeeze(1)
            if rows.numel() == 0:
                return
            if rows.numel() < flat.shape[0]:
                flat, codes = flat.index_select(0, rows), codes.index_select(0, rows)
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
