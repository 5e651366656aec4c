"""Reading and editing attention scores: eager attention, switched on only while needed.

A run that captures a pattern / score site or edits the scores (attention top-k) carries an
:class:`AttentionPlan` in its context (``ctx["attention"]``): per layer, *editors*
(``scores, state -> scores``, before the softmax) and *readers*
(``scores, pattern, state -> None``). :func:`scoped_factory` wraps the run's hook sessions so that
while one is open

- the model runs eager attention (``set_attn_implementation("eager")``; the previous
  implementation comes back when the session closes, also on error or cancel), because only the
  eager path materialises the weights;
- the architecture's module-level ``eager_attention_forward`` (which every attention module looks
  up when it runs) is wrapped: for the planned attention modules only, the softmax it calls is
  intercepted (a ``TorchFunctionMode`` active just for that call), so the scores are read exactly
  as the model's own code computed them (GPT-2's scaling, Gemma 2's soft-cap, the causal, padding
  and sliding-window masks added) and the pattern is the softmax the model uses.

Scores seen by editors and readers are ``[batch, heads, query, key]`` with masked keys at the
dtype's minimum (the eager masks' value). Grouped-query attention needs nothing special: the
eager functions repeat key/value heads, so the scores have one row block per query head.
"""

from __future__ import annotations

import sys
import threading

import torch
from torch.overrides import TorchFunctionMode

from neurolens.errors import InputError

#: what the status line says while a run uses eager attention
EAGER_NOTE = "eager attention: slower"

_SOFTMAX = {torch.nn.functional.softmax, torch.softmax, torch.Tensor.softmax}


class LayerTaps:
    def __init__(self):
        self.editors: list = []
        self.readers: list = []


class AttentionPlan:
    """What a run does inside the attention of each layer (see the module docstring)."""

    def __init__(self):
        self.layers: dict[int, LayerTaps] = {}

    def _layer(self, layer: int) -> LayerTaps:
        return self.layers.setdefault(int(layer), LayerTaps())

    def add_editor(self, layer: int, fn) -> None:
        self._layer(layer).editors.append(fn)

    def add_reader(self, layer: int, fn) -> None:
        self._layer(layer).readers.append(fn)

    def __bool__(self) -> bool:
        return bool(self.layers)


def plan_of(ctx: dict) -> AttentionPlan:
    plan = ctx.get("attention")
    if plan is None:
        plan = ctx["attention"] = AttentionPlan()
    return plan


def visible(scores: torch.Tensor) -> torch.Tensor:
    """Keys a query may attend to: not masked by the eager mask (nor by an earlier editor)."""
    return scores > torch.finfo(scores.dtype).min / 2


class _SoftmaxTap(TorchFunctionMode):
    """Active during one eager attention call: edits the softmax's input, reads its output."""

    def __init__(self, taps: LayerTaps, state):
        super().__init__()
        self.taps, self.state, self.done = taps, state, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.done or func not in _SOFTMAX:
            return func(*args, **kwargs)
        self.done = True
        x = args[0]
        for ed in self.taps.editors:
            x = ed(x, self.state)
        out = func(x, *args[1:], **kwargs)
        for rd in self.taps.readers:
            rd(x, out, self.state)
        return out


_LOCK = threading.RLock()
_ACTIVE: dict[int, tuple[LayerTaps, object]] = {}     # id(attention module) -> (taps, state)
_PATCHES: dict[str, list] = {}                        # modeling module -> [original, users]


def _sparse_step(module, taps, state, args, kwargs):
    """The sparse decode step of attention top-k (:mod:`~neurolens.engine.attention.decode`)
    where it applies, else None."""
    from neurolens.engine.attention import decode
    if not decode.ENABLED or len(args) != 4 or kwargs.get("scaling") is None:
        return None
    query, key, value, mask = args
    if not decode.applies(module, taps, query, kwargs.get("dropout", 0.0), kwargs):
        return None
    return decode.sparse_decode(taps.editors[0], module, query, key, value, mask,
                                kwargs["scaling"], state)


def _wrap(orig):
    def eager_attention_forward(module, *args, **kwargs):
        entry = _ACTIVE.get(id(module))
        if entry is None:
            return orig(module, *args, **kwargs)
        out = _sparse_step(module, *entry, args, kwargs)
        if out is not None:
            return out
        with _SoftmaxTap(*entry):
            return orig(module, *args, **kwargs)
    eager_attention_forward.__wrapped__ = orig
    return eager_attention_forward


def _patch(modname: str, model_type: str) -> None:
    mod = sys.modules.get(modname)
    fn = getattr(mod, "eager_attention_forward", None)
    if fn is None:
        raise InputError(f"attention patterns are not available for '{model_type}': its "
                         "attention has no eager_attention_forward to read the weights from")
    rec = _PATCHES.get(modname)
    if rec is None:
        _PATCHES[modname] = [fn, 1]
        mod.eager_attention_forward = _wrap(fn)
    else:
        rec[1] += 1


def _unpatch(modname: str) -> None:
    rec = _PATCHES.get(modname)
    if rec is None:
        return
    rec[1] -= 1
    if rec[1] <= 0:
        sys.modules[modname].eager_attention_forward = rec[0]
        del _PATCHES[modname]


def attn_implementation(hf) -> str | None:
    return getattr(hf.config, "_attn_implementation", None)


def set_attn_implementation(hf, impl: str | None) -> None:
    """Switch ``hf`` to ``impl`` with the transformers API (every sub-model too)."""
    if attn_implementation(hf) == impl:
        return
    if impl is None:
        hf.config._attn_implementation = None
        return
    hf.set_attn_implementation(impl)


def check_eager(model) -> None:
    """InputError (naming the architecture) when the model cannot run eager attention with
    returned weights."""
    hf = model.hf
    can = getattr(type(hf), "_can_set_attn_implementation", None)
    if not hasattr(hf, "set_attn_implementation") or can is None or not can():
        raise InputError(f"attention patterns are not available for '{model.model_type}': its "
                         "attention cannot switch to eager attention, which returns the weights")
    if getattr(hf.config, "reorder_and_upcast_attn", False):
        raise InputError(f"attention patterns are not available for '{model.model_type}' with "
                         "reorder_and_upcast_attn: that path bypasses the eager function")


def check_patterns(model) -> None:
    """InputError naming the architecture when ``model`` cannot give attention patterns (no
    attention table entry, no eager attention, or an eager path that bypasses the weights)."""
    from neurolens.engine.attention.heads import geometry
    geometry(model)
    check_eager(model)


class ScopedSession:
    """A run's hook session plus eager attention and the planned softmax taps."""

    def __init__(self, sess, model, plan: AttentionPlan, state):
        self.sess, self.model, self.plan, self.state = sess, model, plan, state
        self._entries: list[tuple[int, str]] = []
        self._old: str | None = None
        self._switched = False

    def __getattr__(self, name):            # read_hooks(), state, ... of the hook session
        return getattr(self.sess, name)

    def __enter__(self):
        self.sess.__enter__()
        try:
            self._open()
        except BaseException:
            self._close()
            self.sess.__exit__(None, None, None)
            raise
        return self

    def _open(self) -> None:
        model, hf = self.model, self.model.hf
        arch = model.adapter.arch
        with _LOCK:
            self._old = attn_implementation(hf)
            set_attn_implementation(hf, "eager")
            self._switched = True
            for layer, taps in self.plan.layers.items():
                attn = model.adapter.block_module(hf, layer, arch.attn.module)
                modname = type(attn).__module__
                _patch(modname, model.model_type)
                _ACTIVE[id(attn)] = (taps, self.state)
                self._entries.append((id(attn), modname))

    def _close(self) -> None:
        with _LOCK:
            try:
                while self._entries:
                    key, modname = self._entries.pop()
                    _ACTIVE.pop(key, None)
                    _unpatch(modname)
            finally:
                if self._switched:
                    self._switched = False
                    set_attn_implementation(self.model.hf, self._old)

    def __exit__(self, exc_type, exc, tb):
        try:
            self._close()
        finally:
            self.sess.__exit__(exc_type, exc, tb)


def scoped_factory(model, factory, ctx: dict):
    """``factory`` itself when the run plans nothing inside the attention; else a factory whose
    sessions switch to eager attention and tap the planned layers while open."""
    plan = ctx.get("attention")
    if not plan:
        return factory
    check_eager(model)

    def scoped(state):
        return ScopedSession(factory(state), model, plan, state)
    return scoped
