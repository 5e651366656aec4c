"""Capture handlers: reduce on the producing device, copy to CPU numpy once, append to a store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from neurolens.engine.hooks import RunState
from neurolens.errors import InputError
from neurolens.store.capture_store import CaptureStore

REDUCTIONS = ("tokens", "last", "mean", "max")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """One copy to CPU float32 numpy (t must be a fresh tensor when already on the CPU)."""
    if t.dtype != torch.float32:
        t = t.float()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.numpy()


_READ_ONLY_CONSUMERS = ("Linear", "Conv1D", "NonDynamicallyQuantizableLinear")


def borrowable(ref) -> bool:
    """True when a site's tensor can be kept without a copy: the input of a (plain) linear
    projection, whose forward only reads it, with no fused-part slicing."""
    return (ref.io == "input" and ref.part is None
            and type(ref.module).__name__ in _READ_ONLY_CONSUMERS)


class CaptureHandler:
    def __init__(self, site: str, store: CaptureStore, reduce: str = "tokens",
                 decode: bool = True):
        if reduce not in REDUCTIONS:
            raise InputError(f"unknown reduction '{reduce}' (choose from {', '.join(REDUCTIONS)})")
        self.site, self.store, self.reduce, self.decode = site, store, reduce, decode
        # borrow=True: the tensor is the input of a projection that only reads it and nothing
        # writes to it afterwards, so the store may keep the model's own tensor (no copy).
        # Set by the session planner (see ``borrowable``).
        self.borrow = False

    def __call__(self, x: torch.Tensor, state: RunState):
        if state.phase == "decode":
            if not self.decode:
                return None
            rows = to_numpy(x[:, -1].detach().clone() if x.device.type == "cpu"
                            else x[:, -1].detach())
            act = state.active.tolist() if state.active is not None else [True] * state.batch
            for b, pi in enumerate(state.prompt_index):
                if act[b]:
                    self.store.append(self.site, pi, rows[b], step=state.step)
            return None
        valid = state.valid(x.device)   # None without padding: a plain copy beats a gather
        x = x.detach()
        if self.reduce == "tokens":
            if valid is None:
                rows2d = x.reshape(-1, x.shape[-1])
                own = self.borrow or rows2d.data_ptr() != x.data_ptr()   # reshape copied
                flat = to_numpy(rows2d.clone() if x.device.type == "cpu" and not own
                                else rows2d)
                lens = [x.shape[1]] * x.shape[0]
            else:
                flat = to_numpy(x[valid])  # boolean gather: the one copy
                lens = valid.sum(1).tolist()
            start = 0
            for b, n in enumerate(lens):
                self.store.append(self.site, state.prompt_index[b], flat[start:start + n],
                                  step=state.step)
                start += n
            return None
        if self.reduce == "last":
            if valid is None:
                red = x[:, -1]
            else:  # last real token per row (left padding: the last column)
                last = valid.long().cumsum(1).argmax(1)
                red = x[torch.arange(x.shape[0], device=x.device), last]
        elif valid is None:
            red = x.mean(1) if self.reduce == "mean" else x.amax(1)
        elif self.reduce == "mean":
            m = valid[..., None].to(x.dtype)
            red = (x * m).sum(1) / m.sum(1).clamp_min(1)
        else:
            red = x.masked_fill(~valid[..., None], float("-inf")).amax(1)
        rows = to_numpy(red.clone() if self.reduce == "last" and red.device.type == "cpu" else red)
        for b, pi in enumerate(state.prompt_index):
            self.store.append(self.site, pi, rows[b:b + 1], step=state.step)
        return None


class Capture:
    """Result of ``model.capture`` in every family: ``cap[site][i]`` is a numpy array per prompt,
    ``[tokens, width]`` for a language model; a pipeline's arrays lead with a step axis,
    ``[steps, width]`` (mean, max) or ``[steps, tokens, width]`` (tokens). Rows live in the
    store, or in a safetensors file (``path``) when the capture was streamed to disk."""

    def __init__(self, prompts: list[str], sites: list[str], tokens: list[list[str]],
                 reduce: str, store: CaptureStore | None = None, path: Path | None = None,
                 steps: int | None = None):
        self.prompts, self.sites, self.tokens, self.reduce = prompts, sites, tokens, reduce
        self.store, self.path, self.steps = store, path, steps
        self._file = None

    def _rows(self, site: str, i: int) -> np.ndarray:
        if self.steps is None:
            return self.store.rows(site, i)
        rows = [self.store.rows(site, i, step=k) for k in self.store.steps(site, i)]
        # mean/max: one row [1, width] per step; tokens: [tokens, width] per step
        return np.stack([r if self.reduce == "tokens" else r.reshape(-1) for r in rows])

    def __getitem__(self, site: str) -> list[np.ndarray]:
        if site not in self.sites:
            raise KeyError(f"{site} was not captured (captured: {', '.join(self.sites)})")
        if self.path is not None:
            from safetensors import safe_open
            if self._file is None:
                self._file = safe_open(str(self.path), framework="numpy")
            return [self._file.get_tensor(f"{site}/{i}") for i in range(len(self.prompts))]
        return [self._rows(site, i) for i in range(len(self.prompts))]

    def __contains__(self, site: str) -> bool:
        return site in self.sites

    def keys(self) -> list[str]:
        return list(self.sites)

    def metadata(self) -> dict[str, str]:
        meta = {"format": "neurolens.capture/1", "prompts": json.dumps(self.prompts),
                "tokens": json.dumps(self.tokens), "sites": json.dumps(self.sites),
                "reduce": self.reduce}
        if self.steps is not None:   # a pipeline's arrays are [steps, ...] per prompt
            meta["steps"] = str(self.steps)
        return meta

    def save(self, path: str | Path) -> Path:
        """Write every (site, prompt) array as ``"{site}/{i}"`` with the metadata (atomic)."""
        from neurolens.store.shards import SafetensorsStreamWriter
        with SafetensorsStreamWriter(path) as w:
            for site in self.sites:
                for i, a in enumerate(self[site]):
                    w.add(f"{site}/{i}", np.ascontiguousarray(a))
            return w.close(self.metadata())
