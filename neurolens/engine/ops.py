"""The engine's op registry: for every edit op, how it runs and how it is baked.

An op's data class (its fields, validation and JSON form) lives in :mod:`neurolens.spec.edits`;
one :func:`register` call here gives the engine everything else about it:

- ``build(op, site_ref, ctx) -> handler``: the hook that applies the op during a forward;
- ``kinds``: the model families it applies to (``"lm"``, ``"diffusion"``, ...);
- ``bake(op, target) -> bool`` (optional): write the op into a copy of the weights at export,
  given the :class:`~neurolens.engine.baking.BakeTarget` the family finds for the site; ops
  without it (or returning False) go to the export's sidecar;
- ``hooks(op, model, ctx) -> [(site_ref, handler, editing), ...]`` (optional): ops that need
  more than one hook (a weight mask reads the layer's input and fixes its output) plan them.

The built-in ops register in :mod:`neurolens.engine.interventions` (prune, scale, set, wmask) and
:mod:`neurolens.engine.method_ops` (adjust, gate, topk); a new op is one module with one
``register`` (plus its data class in spec). Shared by every builder: which denoising steps
(:func:`in_steps`) and which token positions (:func:`position_mask`) an op acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import torch

from neurolens.engine.adapters import SiteRef
from neurolens.engine.hooks import Handler, RunState
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp
from neurolens.spec.kinds import ALL_KINDS, KIND_WORDS

Builder = Callable[[EditOp, SiteRef, dict], Handler]


@dataclass(frozen=True)
class EngineOp:
    name: str
    build: Builder
    kinds: tuple[str, ...] = ALL_KINDS
    bake: Callable | None = None
    hooks: Callable | None = None


REGISTRY: dict[str, EngineOp] = {}


def register(name: str, *, kinds: tuple[str, ...] = ALL_KINDS, bake: Callable | None = None,
             hooks: Callable | None = None):
    """Decorator for an op's hook builder (a function or a handler class taking
    ``(op, ref, ctx)``): registers the op under ``name``; returns the builder unchanged."""
    def deco(build: Builder) -> Builder:
        REGISTRY[name] = EngineOp(name, build, tuple(kinds), bake, hooks)
        return build
    return deco


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def lookup(name: str) -> EngineOp:
    e = REGISTRY.get(name)
    if e is None:
        raise InputError(f"edit op '{name}' cannot run on this model (no engine support)")
    return e


def ops_for(kind: str) -> list[str]:
    return [n for n, e in REGISTRY.items() if kind in e.kinds]


def check_applies(op: EditOp, kind: str) -> None:
    """Raise InputError unless ``op`` runs on a model of family ``kind``."""
    e = lookup(op.op)
    if kind not in e.kinds:
        words = KIND_WORDS.get(kind, kind)
        its = " and ".join(KIND_WORDS.get(k, k) + "s" for k in e.kinds)
        raise InputError(f"edit op '{op.op}' is for {its}; a {words} takes "
                         f"{', '.join(ops_for(kind))}")


def hooks(op: EditOp, model, ctx: dict) -> list[tuple[SiteRef, Handler, bool]]:
    """The hooks of ``op`` (one concrete site) as ``(site_ref, handler, editing)``; built once
    per run, so stateful handlers (a seeded generator) keep their state across batches."""
    e = lookup(op.op)
    if e.hooks is not None:
        return list(e.hooks(op, model, ctx))
    ref = model.resolve(op.site)
    return [(ref, e.build(op, ref, ctx), True)]


def build_handler(op: EditOp, ref: SiteRef, ctx: dict) -> Handler:
    return lookup(op.op).build(op, ref, ctx)


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
