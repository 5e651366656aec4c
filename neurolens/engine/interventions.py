"""The generic edit ops as hooks and as baking rules: prune, scale, set (any family) and wmask
(a weight mask on the linear layer that reads a site). Edits never touch the loaded weights:
they are hooks; export bakes the exact ones into a copy (:mod:`neurolens.engine.baking`).
"""

from __future__ import annotations

import numpy as np
import torch

from neurolens.engine.baking import BakeTarget
from neurolens.engine.hooks import RunState
from neurolens.engine.ops import in_steps, position_mask, register
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, MaskWeights


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


def _bake_prune(op: EditOp, t: BakeTarget) -> bool:
    if t.reads is not None:
        t.reads.scale_inputs(op.neurons, 0.0)
        return True
    if t.writes is not None and t.writes_zero:
        t.writes.scale_outputs(op.neurons, 0.0)
        return True
    return False


def _bake_scale(op: EditOp, t: BakeTarget) -> bool:
    if t.reads is not None:
        t.reads.scale_inputs(op.neurons, op.factor)
        return True
    if t.writes is not None and t.writes_linear:
        t.writes.scale_outputs(op.neurons, op.factor)
        return True
    return False


def _bake_set(op: EditOp, t: BakeTarget) -> bool:
    return t.reads is not None and t.reads.fold_inputs(op.neurons, op.value)


register("prune", bake=_bake_prune)(lambda op, ref, ctx: _Prune(op))
register("scale", bake=_bake_scale)(lambda op, ref, ctx: _Scale(op))
register("set", bake=_bake_set)(lambda op, ref, ctx: _Set(op))


class MaskedWeightFix:
    """For a :class:`MaskWeights` op: stash the input of the linear layer that reads the site,
    then correct its output by y - x @ (W * M)^T, which equals the layer with the masked weights
    deleted, without touching the weights."""

    def __init__(self, op: MaskWeights, module: torch.nn.Linear):
        self.op, self.module = op, module
        self._wm: dict = {}
        self.x: torch.Tensor | None = None

    def stash(self, x: torch.Tensor, state: RunState):
        self.x = x if in_steps(self.op, state) else None
        return None

    def fix(self, y: torch.Tensor, state: RunState):
        if self.x is None:
            return None
        key = (y.device, y.dtype)
        wm = self._wm.get(key)
        if wm is None:
            w = self.module.weight.detach()
            mask = torch.as_tensor(np.asarray(self.op.mask), device=w.device).to(w.dtype)
            if mask.shape != w.shape:
                raise InputError(f"{self.op.site}: weight mask shape {tuple(mask.shape)} does not "
                                 f"match the layer's weight {tuple(w.shape)}")
            wm = self._wm[key] = (w * mask).to(device=y.device, dtype=y.dtype)
        x, self.x = self.x, None
        return y - torch.nn.functional.linear(x.to(y.dtype), wm)


def _wmask_hooks(op: MaskWeights, model, ctx) -> list:
    ref = model.resolve(op.site)                 # the reading layer's input
    fix = MaskedWeightFix(op, ref.module)
    return [(ref, fix.stash, False), (model.resolve(op.site, "output"), fix.fix, True)]


def _bake_wmask(op: MaskWeights, t: BakeTarget) -> bool:
    if t.reads is None:
        return False
    t.reads.mask(op.mask)
    return True


def _no_single_hook(op, ref, ctx):   # pragma: no cover - wmask attaches two hooks itself
    raise InputError("a weight mask needs the layer's input and output hooks (see its hooks)")


register("wmask", kinds=("diffusion",), bake=_bake_wmask, hooks=_wmask_hooks)(_no_single_hook)
