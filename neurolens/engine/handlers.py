"""The registry of hook builders, one per edit op, and what every builder shares: which
denoising steps and which token positions an op acts on.

A builder is ``(op, site_ref, ctx) -> handler``; :mod:`neurolens.engine.interventions` registers
prune, scale and set, :mod:`neurolens.engine.method_ops` the paper methods' ops.
"""

from __future__ import annotations

from typing import Callable

import torch

from neurolens.engine.adapters import SiteRef
from neurolens.engine.hooks import Handler, RunState
from neurolens.spec.edits import EditOp

Builder = Callable[[EditOp, SiteRef, dict], Handler]
BUILDERS: dict[str, Builder] = {}


def register_builder(op_name: str):
    def deco(fn: Builder) -> Builder:
        BUILDERS[op_name] = fn
        return fn
    return deco


def in_steps(op: EditOp, state: RunState) -> bool:
    if op.steps is None or state.step is None:
        return True
    return op.steps[0] <= state.step < op.steps[1]


def position_mask(positions, state: RunState, device) -> torch.Tensor | None:
    """[batch, seq] bool mask of the cells an op acts on; None means every cell."""
    if positions == "all":
        return None
    if positions == "last":
        m = torch.zeros(state.batch, state.seq, dtype=torch.bool, device=device)
        m[:, -1] = True
        return m
    pos = state.positions(device)                       # [b, s]
    plen = (state.prompt_len.to(device) if state.prompt_len is not None
            else torch.full((state.batch,), state.seq, device=device))
    m = torch.zeros_like(pos, dtype=torch.bool)
    for p in positions:
        target = plen + p if p < 0 else torch.full_like(plen, p)
        m |= pos == target[:, None]
    return m
