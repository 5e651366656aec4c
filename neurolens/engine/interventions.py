"""Turn an EditSet into hook handlers. Edits never touch the weights: they are hooks.

Each op kind has a builder ``(op, site_ref, ctx) -> handler``; paper-method modules register
builders for their ops (adjust, gate, topk) with :func:`register_builder`.
"""

from __future__ import annotations

import torch

# the paper-method ops (adjust, gate, topk) register their builders on import
from neurolens.engine import method_ops  # noqa: F401
from neurolens.engine.adapters import SiteRef
from neurolens.engine.handlers import (BUILDERS, in_steps, position_mask,  # noqa: F401
                                       register_builder)  # (re-exported: the builder registry)
from neurolens.engine.hooks import Handler, RunState
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp


class _Indexed:
    """Shared machinery for ops on a list of neurons."""

    def __init__(self, op: EditOp):
        self.op = op
        self._idx: dict = {}

    def idx(self, device) -> torch.Tensor:
        t = self._idx.get(device)
        if t is None:
            t = self._idx[device] = torch.tensor(self.op.neurons, dtype=torch.long, device=device)
        return t

    def __call__(self, x: torch.Tensor, state: RunState):
        if not in_steps(self.op, state):
            return None
        idx = self.idx(x.device)
        if int(idx.max()) >= x.shape[-1]:
            raise InputError(f"{self.op.site}: neuron {int(idx.max())} out of range "
                             f"(width {x.shape[-1]})")
        mask = position_mask(self.op.positions, state, x.device)
        cur = x[..., idx]
        new = self.transform(cur)
        if mask is not None:
            new = torch.where(mask[..., None], new, cur)
        x[..., idx] = new.to(x.dtype)
        return x

    def transform(self, cur: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _Prune(_Indexed):
    def __call__(self, x, state):
        if self.op.positions == "all" and in_steps(self.op, state):
            idx = self.idx(x.device)
            x.index_fill_(-1, idx, 0.0)
            return x
        return super().__call__(x, state)

    def transform(self, cur):
        return torch.zeros_like(cur)


class _Scale(_Indexed):
    def transform(self, cur):
        return cur * self.op.factor


class _Set(_Indexed):
    def transform(self, cur):
        return torch.full_like(cur, self.op.value)


BUILDERS["prune"] = lambda op, ref, ctx: _Prune(op)
BUILDERS["scale"] = lambda op, ref, ctx: _Scale(op)
BUILDERS["set"] = lambda op, ref, ctx: _Set(op)


def build_handler(op: EditOp, ref: SiteRef, ctx: dict) -> Handler:
    b = BUILDERS.get(op.op)
    if b is None:
        raise InputError(f"edit op '{op.op}' cannot run on this model (no engine support)")
    return b(op, ref, ctx)
