"""The model contract every family implements, and what the families share.

:class:`Model` is the protocol the front-ends (CLI, GUI worker, methods, bench) program against.
:class:`ModelBase` holds what is the same in every family: merging the loaded model's own edits
with the user's, validating them, expanding site patterns into concrete sites, building the hook
session of a run, and exporting (bake what is exact, keep the rest as a sidecar). A family
supplies only what differs: where a site lives (``resolve``, ``resolve_sites``, ``sites``), how a
run goes (``capture``, ``generate``), and the weights around a site (``bake_target``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable
from collections.abc import Iterable

# the built-in ops register with the engine's op registry on import
from neurolens.engine import interventions, method_ops  # noqa: F401
from neurolens.engine.snn import ops as _snn_ops  # noqa: F401
from neurolens.engine import ops as op_registry
from neurolens.engine.capture import CaptureHandler, borrowable
from neurolens.engine.hooks import HookSession, RunState
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, EditSet


@runtime_checkable
class Model(Protocol):
    """What every loaded model offers (LMs, diffusion pipelines, and the families to come)."""

    kind: str                      # "lm" | "diffusion" | ...
    name_or_path: str
    notes: list[str]
    base_edits: EditSet            # edits the model was loaded with (an export's sidecar)

    @property
    def fingerprint(self) -> str: ...
    @property
    def model_type(self) -> str: ...
    @property
    def n_layers(self) -> int: ...
    def n_params(self) -> int: ...
    def sites(self) -> dict[str, int]: ...
    def resolve_sites(self, patterns: str | Iterable[str]) -> list[str]: ...
    def check_edits(self, edits: EditSet | None) -> list[str]: ...
    def capture(self, prompts, sites=..., **kw) -> Any: ...
    def generate(self, prompts, *, edits: EditSet | None = None, **kw) -> Any: ...
    def compare(self, prompts, edits: EditSet, **kw) -> Any: ...
    def export(self, edits: EditSet | None, out_dir, force: bool = False) -> Any: ...


def with_site(op: EditOp, site: str) -> EditOp:
    """The op itself when it already names ``site``, else a copy acting on ``site`` (one
    concrete site of a pattern)."""
    if op.site == site:
        return op
    import copy
    c = copy.copy(op)
    c.site = site
    return c


class ModelBase:
    """Shared machinery of the families (see the module docstring)."""

    kind: ClassVar[str] = ""

    def _init_common(self, name_or_path: str, device, base_edits: EditSet | None,
                     notes: list[str] | None) -> None:
        self.name_or_path = name_or_path
        self.device = device
        self.base_edits = base_edits or EditSet()
        self.notes = list(notes or [])

    # -- what a family supplies --------------------------------------------------------------------
    def sites(self) -> dict[str, int]:
        raise NotImplementedError

    def resolve(self, name: str, io: str = "input"):
        raise NotImplementedError

    def resolve_sites(self, patterns) -> list[str]:
        raise NotImplementedError

    def _validation_widths(self, edits: EditSet) -> dict[str, int]:
        """Every name the edits may use (sites, aliases, native names) -> its width."""
        return dict(self.sites())

    def _check_op(self, op: EditOp) -> None:
        """Family-specific limits of an op (raise InputError)."""

    # -- edits, once for every family -------------------------------------------------------------
    def check_edits(self, edits: EditSet | None) -> list[str]:
        """Validate an edit set against this model; return warnings (raises SpecError or
        InputError naming the bad op)."""
        if edits is None:
            return []
        if not isinstance(edits, EditSet):
            raise InputError(f"edits must be an EditSet, got {type(edits).__name__}")
        for op in edits.enabled():   # a disabled op may be kept for another model
            op_registry.check_applies(op, self.kind)
            self._check_op(op)
        return edits.validate(self._validation_widths(edits), self.fingerprint)

    def planned_ops(self, edits: EditSet | None = None) -> list[EditOp]:
        """The model's own edits then ``edits`` (checked), enabled ones only, one op per
        concrete site (patterns and aliases expanded)."""
        ops = list(self.base_edits.enabled())
        if edits is not None:
            self.check_edits(edits)
            ops += edits.enabled()
        return [with_site(op, s) for op in ops for s in self.resolve_sites(op.site)]

    def session_factory(self, edits: EditSet | None = None, captures: dict | None = None,
                        ctx: dict | None = None):
        """``state -> HookSession`` with the edits' hooks, then the capture handlers."""
        ctx = ctx if ctx is not None else {}
        ctx.setdefault("model", self)
        planned = [h for op in self.planned_ops(edits) for h in op_registry.hooks(op, self, ctx)]
        for s, handler in (captures or {}).items():
            ref = self.resolve(s)
            if isinstance(handler, CaptureHandler):
                handler.borrow = borrowable(ref)
            planned.append((ref, handler, False))

        def factory(state: RunState) -> HookSession:
            sess = HookSession(state)
            for ref, h, editing in planned:
                sess.add(ref, h, editing)
            return sess
        return factory

    # -- export ----------------------------------------------------------------------------------
    def export(self, edits: EditSet | None, out_dir: str | Path, force: bool = False):
        """Write a folder the family's own library loads, with the exact edits baked into a copy
        of the weights and the others in a sidecar (see :mod:`neurolens.engine.export`)."""
        from neurolens.engine.export import export
        return export(self, edits, out_dir, force=force)
