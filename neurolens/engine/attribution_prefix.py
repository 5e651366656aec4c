"""Exact patching from the clean run's residual stream: a patch at a site of block L leaves
blocks 0 .. L-1 (and block L's attention, for a site after it) as in the clean run, so the
patched forwards need not compute them again.

:class:`CleanPrefix` records, in the clean run, the raw outputs (before any forward hook) of
those modules; while :meth:`CleanPrefix.resume` is active each of them returns its recorded
output, tiled over the patched copies, instead of computing it. Forward hooks on a skipped
module still run on that raw output, so the model's edits act as in the clean run; modules
inside a skipped one are not called at all. Used only where every block is its own module
(each runs once per forward) and the block list, the attention module and the outputs
(tensors or tuples of them) are known; otherwise patched runs compute every block.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import torch

from neurolens.engine.adapters import get_module

_MISSING = object()


def _tileable(out, n: int) -> bool:
    if isinstance(out, torch.Tensor):
        return out.ndim > 0 and out.shape[0] % n == 0
    return type(out) is tuple and all(o is None or _tileable(o, n) for o in out)


def _tile(out, copies: int):
    """A new ``out`` for ``copies`` copies of the batch (row r of the run: prompt r % n); new,
    because edit hooks may change a module's output in place."""
    if out is None:
        return out
    if isinstance(out, torch.Tensor):
        return out.repeat(copies, *([1] * (out.ndim - 1)))
    return tuple(_tile(o, copies) for o in out)


def _copy(out):
    """A copy of a raw output (the forward hooks that run next may edit it in place)."""
    if isinstance(out, torch.Tensor):
        return out.detach().clone()
    if type(out) is tuple:
        return tuple(_copy(o) for o in out)
    return out


@contextmanager
def _replaced_forward(module, fn):
    """``module.forward`` is ``fn`` inside the block; the old one (an instance attribute set by
    someone else too) comes back afterwards, also after an error."""
    old = module.__dict__.get("forward", _MISSING)
    module.forward = fn
    try:
        yield
    finally:
        if old is _MISSING:
            del module.forward
        else:
            module.forward = old


class CleanPrefix:
    """Where each site's patched forward may start, and the clean run's outputs to start from.

    ``start[site] = (layer, ffn)``: blocks before ``layer`` are skipped; for an FFN site
    (``ffn``: not inside the attention module) also block ``layer``'s attention module and the
    FFN's input projections, whose inputs are still the clean run's (a patch at a projection's
    output is the projection's forward hook, which still runs)."""

    def __init__(self, model, sites):
        self.start: dict[str, tuple[int, bool]] = {}
        self.blocks: list = []
        self.inner: list[list] = []           # per block: attention, FFN input projections
        self.saved: dict[int, object] = {}    # id(module) -> raw clean output
        adapter = getattr(model, "adapter", None)
        arch = getattr(adapter, "arch", None)
        run_once = getattr(model, "_modules_run_once", lambda: False)
        if arch is None or not adapter.layers_path or not run_once():
            return
        rel = arch.attn.module if arch.attn is not None else None
        try:
            self.blocks = list(get_module(model.hf, adapter.layers_path))
            for b in self.blocks:
                mods = [get_module(b, r) for r in (rel, arch.pre, arch.up) if r]
                self.inner.append(list({id(m): m for m in mods}.values()))
        except (AttributeError, IndexError, TypeError):
            self.blocks, self.inner = [], []
            return
        for s in sites:
            ref = model.resolve(s)
            if ref.layer is None or not 0 <= ref.layer < len(self.blocks):
                continue
            apath = f"{adapter.layers_path}.{ref.layer}.{rel}" if rel else None
            inside = apath is not None and (ref.module_path == apath or
                                            ref.module_path.startswith(apath + "."))
            self.start[s] = (ref.layer, apath is not None and not inside)

    def row_start(self, sites) -> tuple[int, bool]:
        """Where a forward patching ``sites`` together may start: (layer, ffn)."""
        if not sites or any(s not in self.start for s in sites):
            return 0, False
        layer = min(self.start[s][0] for s in sites)
        return layer, all(self.start[s][1] for s in sites if self.start[s][0] == layer)

    def _wanted(self) -> list:
        last = max((ly for ly, _ in self.start.values()), default=0)
        mods = self.blocks[:last]
        for ly, ffn in set(self.start.values()):
            if ffn:
                mods = mods + self.inner[ly]
        return list({id(m): m for m in mods}.values())

    @contextmanager
    def record(self, n: int):
        """The clean forward of ``n`` rows runs inside: keep what later forwards skip."""
        self.saved = {}
        mods = self._wanted()

        def keeper(mod, orig):
            def forward(*args, **kwargs):
                out = orig(*args, **kwargs)
                self.saved[id(mod)] = _copy(out) if _tileable(out, n) else None
                return out
            return forward

        with _nested([(m, keeper(m, m.forward)) for m in mods]):
            yield

    def _usable(self, mod) -> bool:
        return mod is not None and self.saved.get(id(mod)) is not None

    @contextmanager
    def resume(self, start: tuple[int, bool], copies: int):
        """Patched forwards of ``copies`` copies of the recorded rows run inside, from
        ``start`` (as far as the recorded outputs allow)."""
        layer, ffn = start
        n_skip = 0
        while n_skip < layer and self._usable(self.blocks[n_skip]):
            n_skip += 1
        mods = self.blocks[:n_skip]
        if n_skip == layer and ffn and self.inner and all(map(self._usable, self.inner[layer])):
            mods = mods + self.inner[layer]
        def cached(key):
            return lambda *args, **kwargs: _tile(self.saved[key], copies)

        with _nested([(m, cached(id(m))) for m in mods]):
            yield


@contextmanager
def _nested(pairs):
    """Replace several modules' forwards at once (restored in reverse order)."""
    with ExitStack() as stack:
        for mod, fn in pairs:
            stack.enter_context(_replaced_forward(mod, fn))
        yield
