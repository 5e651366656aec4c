"""Scoped hooks: one hook per (module, input|output), dispatching to the site handlers on it.

Every handle registered in a :class:`HookSession` is removed when the session exits, whether the
run finished, was cancelled or raised. Handlers see the site tensor as ``[batch, seq, width]``
(OPT's 2-D ``[batch*seq, width]`` tensors are viewed back using the run state).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from collections.abc import Callable

import torch

from neurolens.engine.adapters import SiteRef


class CancelToken:
    """Thread-safe cancel flag checked by the engine at every token / denoising step."""

    def __init__(self):
        self._ev = threading.Event()

    def cancel(self) -> None:
        self._ev.set()

    @property
    def cancelled(self) -> bool:
        return self._ev.is_set()

    def reset(self) -> None:
        self._ev.clear()


@dataclass
class RunState:
    """What the hooks need to know about the forward in flight."""

    batch: int = 0
    seq: int = 0                                  # columns of the current forward
    offset: int = 0                               # columns processed before this forward
    attention_mask: torch.Tensor | None = None    # [batch, seq] of the current forward
    pad: torch.Tensor | None = None               # left padding per row [batch]
    prompt_len: torch.Tensor | None = None        # real prompt tokens per row [batch]
    prompt_index: list[int] = field(default_factory=list)  # store index of each row
    active: torch.Tensor | None = None            # rows still generating [batch] (decode)
    step: int | None = None                       # diffusion denoising step
    phase: str = "prefill"                        # "prefill" | "decode"
    extra: dict = field(default_factory=dict)     # per-run scratch for stateful ops (gate)
    # hooks that must still run in this forward (read handlers, and edit handlers that report
    # per-run results); when set and it empties, the forward stops (StopForward): nothing
    # downstream of the last such site is computed
    pending_reads: set | None = None
    _valid_key: tuple | None = field(default=None, repr=False)
    _valid_val: torch.Tensor | None = field(default=None, repr=False)

    def positions(self, device) -> torch.Tensor:
        """Absolute token position of every cell [batch, seq] (prompt starts at 0)."""
        cols = torch.arange(self.offset, self.offset + self.seq, device=device)
        pad = self.pad.to(device) if self.pad is not None else torch.zeros(self.batch,
                                                                           dtype=torch.long,
                                                                           device=device)
        return cols[None, :] - pad[:, None]

    def valid(self, device) -> torch.Tensor | None:
        """Mask of real (non-pad) cells of the current forward, or None when all are real.
        Computed once per forward and device (every site of the forward shares it)."""
        if self.attention_mask is None:
            return None
        key = (str(device), self.seq, self.offset, id(self.attention_mask))
        if key != self._valid_key:
            m = self.attention_mask[:, -self.seq:].to(device=device, dtype=torch.bool)
            self._valid_key, self._valid_val = key, (None if bool(m.all()) else m)
        return self._valid_val


Handler = Callable[[torch.Tensor, RunState], torch.Tensor | None]


class StopForward(Exception):
    """Raised by a hook once every read handler of the forward has run (early stop)."""


def _as3d(x: torch.Tensor, state: RunState) -> tuple[torch.Tensor, bool]:
    if x.ndim == 3:
        return x, False
    if x.ndim == 2 and state.batch and x.shape[0] == state.batch * state.seq:
        return x.view(state.batch, state.seq, x.shape[1]), True
    if x.ndim == 2:  # e.g. pooled inputs; treat rows as a batch of length-1 sequences
        return x[:, None, :], True
    return x, False


class _ModuleHook:
    """All handlers on one (module, io)."""

    def __init__(self, state: RunState):
        self.state = state
        self.by_part: dict[tuple[int, int] | None, list[tuple[str, Handler]]] = {}
        self.reads = False

    def add(self, part, handler: Handler, editing: bool) -> None:
        self.by_part.setdefault(part, []).append(("edit" if editing else "read", handler))
        # a hook "reads" when a forward may not stop before it: it captures, or its edit reports
        # per-run results (``handler.reports``: a gate's abstentions, top-k's active fractions)
        self.reads = self.reads or not editing or getattr(handler, "reports", False)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            return x
        x3, flat = _as3d(x, self.state)
        edits = any(kind == "edit" for hs in self.by_part.values() for kind, _ in hs)
        if edits and x3.requires_grad:
            x3 = x3.clone()
        for part, handlers in self.by_part.items():
            if part is None:
                view = x3
            else:
                k, n = part
                w = x3.shape[-1] // n
                view = x3[..., k * w:(k + 1) * w]
            for kind, h in handlers:
                out = h(view, self.state)
                if kind == "edit" and out is not None and out is not view:
                    if part is None:
                        x3 = out
                        view = out
                    else:
                        view.copy_(out)
        pending = self.state.pending_reads
        if pending is not None and self.reads:
            pending.discard(id(self))
            if not pending:
                raise StopForward
        if flat:
            return x3.reshape(x.shape)
        return x3

    def forward_hook(self, module, args, output):
        if isinstance(output, tuple):
            return (self._apply(output[0]),) + output[1:]
        if hasattr(output, "last_hidden_state") and not isinstance(output, torch.Tensor):
            output.last_hidden_state = self._apply(output.last_hidden_state)
            return output
        return self._apply(output)

    def forward_pre_hook(self, module, args, kwargs):
        if args:
            return (self._apply(args[0]),) + tuple(args[1:]), kwargs
        if "hidden_states" in kwargs:
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = self._apply(kwargs["hidden_states"])
            return args, kwargs
        for k, v in kwargs.items():  # first tensor keyword argument
            if isinstance(v, torch.Tensor):
                kwargs = dict(kwargs)
                kwargs[k] = self._apply(v)
                return args, kwargs
        return None


class HookSession:
    """Context manager that owns every hook of one run.

    ``add(site_ref, handler, editing)`` attaches a handler; edit handlers run before read
    handlers on the same site, so captures see the edited values that flow downstream.
    """

    def __init__(self, state: RunState | None = None):
        self.state = state or RunState()
        self._hooks: dict[tuple[int, str], _ModuleHook] = {}
        self._order: list[tuple[object, str, _ModuleHook]] = []
        self._handles: list = []
        self._entered = False

    def add(self, ref: SiteRef, handler: Handler, editing: bool = False) -> None:
        if self._entered:
            raise RuntimeError("add handlers before entering the session")
        key = (id(ref.module), ref.io)
        mh = self._hooks.get(key)
        if mh is None:
            mh = self._hooks[key] = _ModuleHook(self.state)
            self._order.append((ref.module, ref.io, mh))
        mh.add(ref.part, handler, editing)

    def __enter__(self) -> HookSession:
        self._entered = True
        try:
            for module, io, mh in self._order:
                # edits first: stable sort puts "edit" handlers ahead of "read" ones
                for part in mh.by_part:
                    mh.by_part[part].sort(key=lambda kh: kh[0] != "edit")
                if io == "output":
                    self._handles.append(module.register_forward_hook(mh.forward_hook))
                else:
                    self._handles.append(module.register_forward_pre_hook(mh.forward_pre_hook,
                                                                          with_kwargs=True))
        except BaseException:
            self.remove()
            raise
        return self

    def read_hooks(self) -> set:
        """Ids of the module hooks a forward must reach (see RunState.pending_reads)."""
        return {id(mh) for _, _, mh in self._order if mh.reads}

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self._order)
