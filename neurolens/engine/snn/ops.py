"""The synapse and delay ops of spiking networks as hooks and as baking rules.

Edits never touch the loaded weights: for a layer with synapse ops, one hook pair on its delayed
projection stashes the input and replaces the output with the same convolution run with an
edited kernel, built once per run from the layer's weights and whole-bin delays by the layer's
ops in order (:func:`apply_op`). Export applies the same function to a copy of the projection
(weights and delays written back), so a baked export equals the hooked model exactly; the
re-blur op is not one delay per synapse and goes to the sidecar.
"""

from __future__ import annotations

import numpy as np
import torch

from neurolens.engine.baking import BakeTarget
from neurolens.engine.hooks import RunState
from neurolens.engine.ops import register
from neurolens.engine.snn.layers import DelayedProjection, gaussian_taps, onehot_taps
from neurolens.errors import InputError
from neurolens.spec.snn_edits import SNN_OPS, BlurKernels, SynapseOp


def check_op(op: SynapseOp, proj: DelayedProjection) -> None:
    """Limits that need the layer: synapse indices in range."""
    pairs = getattr(op, "synapses", None)
    if pairs:
        for j, k in pairs:
            if j >= proj.n_out or k >= proj.n_in:
                raise InputError(f"{op.site}: synapse [{j}, {k}] out of range (the layer has "
                                 f"{proj.n_out} neurons x {proj.n_in} inputs)")


def _on_grid(d: torch.Tensor, step: int, offset: int, top: int) -> torch.Tensor:
    q = torch.floor((d - offset) / step + 0.5) * step + offset
    q = torch.where(q > top, q - step, q)
    return torch.where(q < 0, q + step, q)


def quantize(w: torch.Tensor, d: torch.Tensor, step: int, top: int,
             per_neuron: bool = False) -> torch.Tensor:
    """Delays ``[neurons, inputs]`` rounded (half up) to the grid ``offset + step * m`` within
    ``0..top``: offset 0, or per neuron (row) the offset in ``0..step-1`` with the least
    ``sum |w| * |shift|`` (the smaller offset on a tie)."""
    if not per_neuron:
        return _on_grid(d, step, 0, top)
    best, best_cost = None, None
    for offset in range(step):
        q = _on_grid(d, step, offset, top)
        cost = (w.abs() * (q - d).abs()).sum(1)
        if best is None:
            best, best_cost = q, cost
        else:
            better = cost < best_cost
            best = torch.where(better[:, None], q, best)
            best_cost = torch.minimum(cost, best_cost)
    return best


def apply_op(op: SynapseOp, w: torch.Tensor, d: torch.Tensor, kernel_size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, whole-bin delays)`` ``[neurons, inputs]`` after ``op`` (new tensors)."""
    w, d = w.clone(), d.clone()
    top = kernel_size - 1
    if op.op == "prune_synapses":
        if op.synapses is not None:
            idx = torch.tensor(op.synapses, dtype=torch.long)
            w[idx[:, 0], idx[:, 1]] = 0.0
        else:
            n = int(round(op.fraction * w.numel()))
            order = np.argsort(np.abs(w.detach().cpu().numpy()).reshape(-1), kind="stable")
            flat = w.view(-1)
            flat[torch.from_numpy(order[:n].copy())] = 0.0
    elif op.op == "delay_zero":
        d.zero_()
    elif op.op == "delay_quantize":
        d = quantize(w, d, op.step, top, per_neuron=op.phase == "neuron")
    elif op.op == "delay_shuffle":
        perm = np.random.default_rng(op.seed).permutation(d.numel())
        d = d.reshape(-1)[torch.from_numpy(perm)].reshape(d.shape)
    elif op.op == "delay_jitter":
        j = np.random.default_rng(op.seed).integers(-op.bins, op.bins + 1, size=tuple(d.shape))
        d = (d + torch.from_numpy(j).to(d.dtype)).clamp(0, top)
    elif op.op == "delay_blur":
        pass        # acts on the kernel (see LayerEdit.kernel)
    else:   # pragma: no cover - registered ops only
        raise InputError(f"unknown synapse op {op.op!r}")
    return w, d


class LayerEdit:
    """The synapse ops of one layer in one run: stash the projection's input, replace its
    output by the convolution with the edited kernel."""

    def __init__(self, proj: DelayedProjection):
        self.proj = proj
        self.ops: list[SynapseOp] = []
        self._kernel: torch.Tensor | None = None
        self.x: torch.Tensor | None = None

    def kernel(self) -> torch.Tensor:
        if self._kernel is None:
            p = self.proj
            w = p.weight.detach()
            d = p.integer_delays().to(w.dtype)
            blur = None
            for op in self.ops:
                w, d = apply_op(op, w, d, p.kernel_size)
                if isinstance(op, BlurKernels):
                    blur = op.sigma
            taps = (gaussian_taps(d, p.kernel_size, blur) if blur is not None
                    else onehot_taps(d, p.kernel_size))
            self._kernel = w[..., None] * taps
        return self._kernel

    def stash(self, x: torch.Tensor, state: RunState):
        self.x = x
        return None

    def fix(self, y: torch.Tensor, state: RunState):
        x, self.x = self.x, None
        if x is None:
            return None
        k = self.kernel().to(device=y.device, dtype=y.dtype)
        return self.proj.forward(x, kernel=k)       # forward(): no hooks on the way


def _hooks(op: SynapseOp, model, ctx: dict) -> list:
    out = model.resolve(op.site, "output")
    key = ("snn-layer-edit", id(out.module))
    le = ctx.get(key)
    if le is not None:
        le.ops.append(op)
        return []
    le = ctx[key] = LayerEdit(out.module)
    le.ops.append(op)
    return [(model.resolve(op.site, "input"), le.stash, False), (out, le.fix, True)]


def _bake(op: SynapseOp, t: BakeTarget) -> bool:
    if not op.exact or t.writes is None or not isinstance(t.writes.module, DelayedProjection):
        return False
    p = t.writes.module
    w, d = apply_op(op, p.weight.detach(), p.integer_delays().to(p.weight.dtype),
                    p.kernel_size)
    with torch.no_grad():
        p.weight.copy_(w)
        p.delay.copy_(d.to(p.delay.dtype))
    return True


def _no_single_hook(op, ref, ctx):   # pragma: no cover - the ops plan their two hooks
    raise InputError("a synapse op needs the layer's input and output hooks (see its hooks)")


for _cls in SNN_OPS:
    register(_cls.op, kinds=("snn",), bake=_bake, hooks=_hooks)(_no_single_hook)
