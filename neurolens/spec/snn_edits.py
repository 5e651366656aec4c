"""Edit ops on the synapses of a spiking network (weights and delays). Pure data.

Each op names the synapses into one layer by the site ``layers.{l}.synapses`` (or a pattern such
as ``layers.*.synapses``) and acts on every time bin. Importing this module registers the ops
with the spec's op table (:func:`neurolens.spec.edits.register_op`); the engine's hooks and
baking rules live in :mod:`neurolens.engine.snn.ops`.

- ``prune_synapses``: delete synapses, chosen (``synapses``: ``[[neuron, input], ...]``) or the
  smallest ``|w|`` ``fraction`` of the layer;
- ``delay_zero``: every delay set to 0 bins;
- ``delay_quantize``: delays rounded (half up) to multiples of ``step`` bins (those past the
  largest delay go one step down); with ``phase: "neuron"`` each neuron's grid is shifted by
  the offset in ``0..step-1`` that moves its incoming delays least (sum of ``|w| * shift``): a
  per-neuron base delay plus synaptic delays in steps of ``step``;
- ``delay_shuffle``: the layer's delays permuted among its synapses (``seed``);
- ``delay_jitter``: every delay moved by a uniform integer in ``-bins..bins`` (``seed``), clipped
  to the kernel;
- ``delay_blur``: every synapse's one-hot kernel replaced by a normalised Gaussian of width
  ``sigma`` bins around its delay (not one delay per synapse: kept as a sidecar on export).

All but ``delay_blur`` are exact in the weights and delays, so export bakes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from neurolens.errors import SpecError
from neurolens.spec.edits import EditOp, register_op


def _int(value: Any, where: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SpecError(f"{where}: expected an integer >= {lo}, got {value!r}")
    return int(value)


QUANTIZE_PHASES = ("grid", "neuron")


@dataclass
class SynapseOp(EditOp):
    """Base of the ops on a layer's synapses (site ``layers.{l}.synapses``)."""

    #: the engine checks the site is a ``synapses`` site
    synaptic: ClassVar[bool] = True
    #: the op changes delays (a no-delay network refuses it)
    needs_delays: ClassVar[bool] = True
    #: exact in the weights and delays (export bakes it)
    exact: ClassVar[bool] = True

    def _init(self, site, enabled, note) -> None:
        self.site, self.positions, self.enabled, self.note, self.steps = site, "all", enabled, \
            note, None

    def check(self, where: str) -> None:
        super().check(where)
        if self.positions != "all":
            raise SpecError(f"{where}.positions: synapse ops act on every time bin")
        if self.steps is not None:
            raise SpecError(f"{where}.steps: synapse ops have no step window")

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        return f"{self.op} at {self.site}"


@dataclass
class PruneSynapses(SynapseOp):
    op: ClassVar[str] = "prune_synapses"
    linear: ClassVar[bool] = True
    needs_delays: ClassVar[bool] = False
    synapses: list | None = None          # [[neuron, input], ...]
    fraction: float | None = None         # or: the smallest-|w| fraction of the layer

    def __init__(self, site: str, synapses=None, fraction: float | None = None,
                 enabled: bool = True, note: str = ""):
        self._init(site, enabled, note)
        self.synapses, self.fraction = synapses, fraction
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        if (self.synapses is None) == (self.fraction is None):
            raise SpecError(f"{where}: give either synapses ([[neuron, input], ...]) or "
                            "fraction (the smallest |w|)")
        if self.fraction is not None:
            f = self.fraction
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
                raise SpecError(f"{where}.fraction: expected a number in 0..1, got {f!r}")
            self.fraction = float(f)
        else:
            pairs = self.synapses
            if not isinstance(pairs, (list, tuple)) or not pairs:
                raise SpecError(f"{where}.synapses: expected a non-empty list of "
                                f"[neuron, input] pairs, got {pairs!r}")
            out = []
            for i, p in enumerate(pairs):
                if (not isinstance(p, (list, tuple)) or len(p) != 2
                        or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                               for v in p)):
                    raise SpecError(f"{where}.synapses[{i}]: expected [neuron, input] "
                                    f"(non-negative integers), got {p!r}")
                out.append([int(p[0]), int(p[1])])
            self.synapses = out

    def describe(self) -> str:
        what = (f"{len(self.synapses)} synapse{'s' if len(self.synapses) != 1 else ''}"
                if self.synapses is not None else f"the smallest {self.fraction:.1%} of |w|")
        return f"prune_synapses {what} at {self.site}"


@dataclass
class ZeroDelays(SynapseOp):
    op: ClassVar[str] = "delay_zero"

    def __init__(self, site: str, enabled: bool = True, note: str = ""):
        self._init(site, enabled, note)
        self.check("edit")

    def describe(self) -> str:
        return f"delay_zero: every delay 0 at {self.site}"


@dataclass
class QuantizeDelays(SynapseOp):
    op: ClassVar[str] = "delay_quantize"
    required: ClassVar[tuple[str, ...]] = ("site", "step")
    step: int = 1
    phase: str = "grid"

    def __init__(self, site: str, step: int = 1, phase: str = "grid", enabled: bool = True,
                 note: str = ""):
        self._init(site, enabled, note)
        self.step, self.phase = step, phase
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.step = _int(self.step, f"{where}.step", 1)
        if self.phase not in QUANTIZE_PHASES:
            raise SpecError(f"{where}.phase: expected one of {', '.join(QUANTIZE_PHASES)}, got "
                            f"{self.phase!r}")

    def describe(self) -> str:
        grid = "" if self.phase == "grid" else ", grid offset per neuron"
        return f"delay_quantize to steps of {self.step} bins{grid} at {self.site}"


@dataclass
class ShuffleDelays(SynapseOp):
    op: ClassVar[str] = "delay_shuffle"
    seed: int = 0

    def __init__(self, site: str, seed: int = 0, enabled: bool = True, note: str = ""):
        self._init(site, enabled, note)
        self.seed = seed
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.seed = _int(self.seed, f"{where}.seed", 0)

    def describe(self) -> str:
        return f"delay_shuffle (seed {self.seed}) at {self.site}"


@dataclass
class JitterDelays(SynapseOp):
    op: ClassVar[str] = "delay_jitter"
    required: ClassVar[tuple[str, ...]] = ("site", "bins")
    bins: int = 1
    seed: int = 0

    def __init__(self, site: str, bins: int = 1, seed: int = 0, enabled: bool = True,
                 note: str = ""):
        self._init(site, enabled, note)
        self.bins, self.seed = bins, seed
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.bins = _int(self.bins, f"{where}.bins", 0)
        self.seed = _int(self.seed, f"{where}.seed", 0)

    def describe(self) -> str:
        return f"delay_jitter +-{self.bins} bins (seed {self.seed}) at {self.site}"


@dataclass
class BlurKernels(SynapseOp):
    op: ClassVar[str] = "delay_blur"
    exact: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ("site", "sigma")
    sigma: float = 1.0

    def __init__(self, site: str, sigma: float = 1.0, enabled: bool = True, note: str = ""):
        self._init(site, enabled, note)
        self.sigma = sigma
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) \
                or s <= 0:
            raise SpecError(f"{where}.sigma: expected a number > 0 (bins), got {s!r}")
        self.sigma = float(s)

    def describe(self) -> str:
        return f"delay_blur sigma {self.sigma:g} bins at {self.site}"


SNN_OPS = (PruneSynapses, ZeroDelays, QuantizeDelays, ShuffleDelays, JitterDelays, BlurKernels)
for _cls in SNN_OPS:
    register_op(_cls)
