"""Edit ops on attention heads and attention scores (LMs). Pure data.

- ``prune_head``: zero the heads' outputs (their slice of ``blocks.{l}.attn.hook_z``);
- ``scale_head``: multiply them by ``factor``;
- ``mean_ablate_head``: replace them by their mean over a prompt set (``mean``: one row of
  ``d_head`` values per head, in the order of ``heads``);
- ``attn_topk``: Spark's statistical top-k on the scores (site
  ``blocks.{l}.attn.hook_attn_scores``): per query, over the n keys it may attend to, keep the
  keys whose score passes ``mean + std * Phi^-1(1 - k/n)`` and mask the rest before the softmax;
  ``k`` a count or ``keep_fraction`` of n; only where n > k and n >= ``min_context``; ``mode``
  ``"exact"`` keeps the k highest instead (a reference). ``calibrate`` (``"layer"`` or
  ``"head"``) adds a fitted offset to the quantile, ``mean + std * (Phi^-1(1 - k/n) + dz)``,
  one ``dz`` per layer or per layer x head, kept in ``z_offset`` (``{layer: dz}`` or
  ``{layer: [dz per head]}``) so that the mean realised count matches k on the prompts it was
  fitted on (:func:`neurolens.engine.attention.calibrate.calibrate`). Without it the rule is the
  paper's.

Heads are query heads (grouped-query attention shares key/value heads between them). Importing
this module registers the ops (:func:`neurolens.spec.edits.register_op`); their hooks and
baking rules live in :mod:`neurolens.engine.attention.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from neurolens.errors import SpecError
from neurolens.spec.edits import EditOp, Positions, _check_neurons, _check_number, register_op
from neurolens.spec.sites import parse_site


def _check_kind(site: str, kind: str, where: str) -> None:
    s = parse_site(site)
    ok = s.kind == kind if s is not None else site.endswith("." + kind)
    if not ok:
        raise SpecError(f"{where}.site: expected a blocks.L.{kind} site, got {site!r}")


def _check_heads(value: Any, where: str) -> list[int]:
    return _check_neurons(value, where, field="heads", noun="head")


@dataclass
class HeadOp(EditOp):
    """Base of the ops on whole heads (site ``blocks.{l}.attn.hook_z``)."""

    required: ClassVar[tuple[str, ...]] = ("site", "heads")
    heads: list[int] = field(default_factory=list)

    def check(self, where: str) -> None:
        super().check(where)
        _check_kind(self.site, "attn.hook_z", where)
        self.heads = _check_heads(self.heads, where)

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        hs = ", ".join(f"H{h}" for h in self.heads)
        return f"{self.op} {hs} at {self.site}"


@register_op
@dataclass
class PruneHead(HeadOp):
    op: ClassVar[str] = "prune_head"
    linear: ClassVar[bool] = True

    def __init__(self, site: str, heads, positions: Positions = "all", enabled: bool = True,
                 note: str = ""):
        self.site, self.heads, self.positions = site, heads, positions
        self.enabled, self.note, self.steps = enabled, note, None
        self.check("edit")


@register_op
@dataclass
class ScaleHead(HeadOp):
    op: ClassVar[str] = "scale_head"
    linear: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("site", "heads", "factor")
    factor: float = 1.0

    def __init__(self, site: str, heads, factor: float = 1.0, positions: Positions = "all",
                 enabled: bool = True, note: str = ""):
        self.site, self.heads, self.factor, self.positions = site, heads, factor, positions
        self.enabled, self.note, self.steps = enabled, note, None
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.factor = _check_number(self.factor, f"{where}.factor")

    def describe(self) -> str:
        return super().describe().replace(" at ", f" x{self.factor:g} at ")


@register_op
@dataclass
class MeanAblateHead(HeadOp):
    op: ClassVar[str] = "mean_ablate_head"
    required: ClassVar[tuple[str, ...]] = ("site", "heads", "mean")
    mean: Any = None            # [len(heads), d_head] float32 (sidecar)

    def __init__(self, site: str, heads, mean, positions: Positions = "all",
                 enabled: bool = True, note: str = ""):
        self.site, self.heads, self.mean, self.positions = site, heads, mean, positions
        self.enabled, self.note, self.steps = enabled, note, None
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        m = np.asarray(self.mean, dtype=np.float32)
        if m.ndim == 1 and m.size % len(self.heads) == 0:
            m = m.reshape(len(self.heads), -1)
        if m.ndim != 2 or m.shape[0] != len(self.heads) or m.shape[1] == 0:
            raise SpecError(f"{where}.mean: expected one row of d_head values per head "
                            f"({len(self.heads)} rows), got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise SpecError(f"{where}.mean: contains non-finite values")
        self.mean = m


@register_op
@dataclass
class AttnTopK(EditOp):
    op: ClassVar[str] = "attn_topk"
    required: ClassVar[tuple[str, ...]] = ("site",)
    k: float | None = None               # keys kept per query (a count) ...
    keep_fraction: float | None = None   # ... or a fraction of the n visible keys
    min_context: int = 0                 # act only on queries with n >= min_context keys
    mode: str = "statistical"            # or "exact" (the k highest scores)
    calibrate: str | None = None         # "layer" | "head": z offsets fitted on prompts ...
    z_offset: Any = None                 # ... {layer: dz} or {layer: [dz per head]}

    def __init__(self, site: str = "blocks.*.attn.hook_attn_scores", k: float | None = None,
                 keep_fraction: float | None = None, min_context: int = 0,
                 mode: str = "statistical", enabled: bool = True, note: str = "",
                 calibrate: str | None = None, z_offset: Any = None):
        self.site, self.k, self.keep_fraction, self.min_context = site, k, keep_fraction, \
            min_context
        self.mode, self.positions, self.enabled, self.note, self.steps = mode, "all", enabled, \
            note, None
        self.calibrate, self.z_offset = calibrate, z_offset
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        _check_kind(self.site, "attn.hook_attn_scores", where)
        if (self.k is None) == (self.keep_fraction is None):
            raise SpecError(f"{where}: give either k (keys per query) or keep_fraction")
        if self.k is not None:
            self.k = _check_number(self.k, f"{where}.k")
            if self.k <= 0:
                raise SpecError(f"{where}.k: attention top-k needs k > 0, got {self.k:g}")
        else:
            self.keep_fraction = _check_number(self.keep_fraction, f"{where}.keep_fraction")
            if not 0 < self.keep_fraction <= 1:
                raise SpecError(f"{where}.keep_fraction: must be in (0, 1], got "
                                f"{self.keep_fraction:g}")
        if isinstance(self.min_context, bool) or not isinstance(self.min_context, int) \
                or self.min_context < 0:
            raise SpecError(f"{where}.min_context: expected an integer >= 0, got "
                            f"{self.min_context!r}")
        if self.mode not in ("statistical", "exact"):
            raise SpecError(f"{where}.mode: 'statistical' or 'exact', got {self.mode!r}")
        if self.positions != "all":
            raise SpecError(f"{where}.positions: attention top-k acts on every query")
        self._check_calibration(where)

    def _check_calibration(self, where: str) -> None:
        if self.calibrate is None:
            if self.z_offset is not None:
                raise SpecError(f"{where}.z_offset: offsets come with calibrate "
                                "('layer' or 'head')")
            return
        if self.calibrate not in ("layer", "head"):
            raise SpecError(f"{where}.calibrate: 'layer' or 'head', got {self.calibrate!r}")
        if self.mode != "statistical":
            raise SpecError(f"{where}.calibrate: calibrates the statistical rule, not "
                            f"mode {self.mode!r}")
        if self.z_offset is None:
            return                                  # not fitted yet
        if not isinstance(self.z_offset, dict):
            raise SpecError(f"{where}.z_offset: expected {{layer: offset}}, got "
                            f"{type(self.z_offset).__name__}")
        out = {}
        for key, v in self.z_offset.items():
            if not str(key).isdigit():
                raise SpecError(f"{where}.z_offset: keys are layer numbers, got {key!r}")
            w = f"{where}.z_offset.{key}"
            if self.calibrate == "head":
                if not isinstance(v, (list, tuple)) or not v:
                    raise SpecError(f"{w}: expected one offset per head (a list)")
                out[str(int(key))] = [_check_number(x, w) for x in v]
            else:
                out[str(int(key))] = _check_number(v, w)
        self.z_offset = out

    def layer_offset(self, layer: int):
        """The fitted offset of ``layer`` (a number, or a list per head; 0.0 uncalibrated;
        None: calibrated but not fitted for this layer)."""
        if self.calibrate is None:
            return 0.0
        return (self.z_offset or {}).get(str(int(layer)))

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        k = f"k={self.k:g}" if self.k is not None else f"k={self.keep_fraction:g}n"
        ctx = f" from n>={self.min_context}" if self.min_context else ""
        cal = f" calibrated per {self.calibrate}" if self.calibrate else ""
        return f"attn_topk {self.mode} {k}{ctx}{cal} at {self.site}"
