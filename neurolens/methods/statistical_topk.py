"""Statistical top-k activation sparsity (Spark Transformer; METHODS.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING

from neurolens.errors import InputError
from neurolens.methods.registry import MethodResult, MethodSpec, param, register
from neurolens.spec.edits import EditSet, ModelRef, TopK

if TYPE_CHECKING:   # torch loads with the engine, not with the method registry (CLI start-up)
    import torch


def threshold(g: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """theta = mean(g) + std(g) * Phi^-1(1 - k/d) over the last dimension (population std)."""
    from neurolens.engine.method_ops import stat_threshold
    return stat_threshold(g, NormalDist().inv_cdf(1.0 - keep_fraction))


def statistical_topk(g: torch.Tensor, keep_fraction: float, variant: str = "soft"
                     ) -> torch.Tensor:
    """O(d) top-k approximation: soft (g - theta)+ or hard g * [g > theta]. No sort."""
    if variant not in ("soft", "hard"):
        raise ValueError(f"variant must be 'soft' or 'hard', not {variant!r}")
    from neurolens.engine.method_ops import stat_topk
    return stat_topk(g, NormalDist().inv_cdf(1.0 - keep_fraction), variant)


@dataclass
class SparsityReport:
    keep_fraction: float
    active_fraction: dict[str, float] = field(default_factory=dict)   # per site, realised
    flops_saved: float = 0.0     # fraction of FFN matmul FLOPs a sparse up/down would save

    def to_json(self) -> dict:
        return {"keep_fraction": self.keep_fraction,
                "active_fraction": {k: round(v, 4) for k, v in self.active_fraction.items()},
                "flops_saved": round(self.flops_saved, 4)}


def edits(lm, keep_fraction: float = 0.08, variant: str = "soft") -> EditSet:
    return EditSet([TopK("blocks.*.mlp.hook_pre", keep_fraction, variant=variant,
                         note="Spark statistical top-k")],
                   ModelRef(lm.name_or_path, lm.fingerprint))


def measure(lm, prompts: list[str], keep_fraction: float = 0.08, variant: str = "soft",
            batch_size: int = 16) -> SparsityReport:
    """Run the prompts with the topk edit and report the realised active fraction per layer."""
    ctx: dict = {}
    es = edits(lm, keep_fraction, variant)
    factory = lm.session_factory(es, ctx=ctx)
    from neurolens.engine.events import drain
    from neurolens.engine.runner import forward_events
    drain(forward_events(lm, prompts, factory, batch_size), what="top-k measurement")
    stats = ctx.get("topk_stats", {})
    frac = {s: v[0] / max(v[1], 1) for s, v in stats.items()}
    mean_active = sum(frac.values()) / max(len(frac), 1)
    # gated FFN: gate (dense: it decides), up and down (sparse): 3 matmuls of equal size
    n_mats = 3 if lm.adapter.arch is not None and lm.adapter.arch.up else 2
    saved = (n_mats - 1) / n_mats * (1 - mean_active)
    return SparsityReport(keep_fraction, frac, saved)


@dataclass
class TopKFit:
    """The report of fitting top-k: the setting, and what it realised on the probe prompts
    when there were any (``measured``)."""

    keep_fraction: float
    variant: str
    measured: SparsityReport | None = None

    def summary(self) -> str:
        text = f"Statistical top-k keeping {self.keep_fraction:.1%}"
        if self.measured is not None:
            fr = list(self.measured.active_fraction.values())
            text += (f"; realised active fraction {min(fr):.1%}–{max(fr):.1%} per layer, "
                     f"{self.measured.flops_saved:.0%} of FFN FLOPs saveable")
        return text

    def to_json(self) -> dict:
        out = {"keep_fraction": self.keep_fraction, "variant": self.variant}
        if self.measured is not None:
            out["measured"] = self.measured.to_json()
        return out


@dataclass
class Params:
    keep_fraction: float = param(0.08, "kept share of the pre-activations per token (0.08)",
                                 label="keep")
    variant: str = param("soft", "soft (g - theta)+ or hard g * [g > theta]",
                         choices=("soft", "hard"))

    def check(self) -> None:
        if not 0 < self.keep_fraction < 1:
            raise InputError(f"keep-fraction must lie between 0 and 1, got {self.keep_fraction}")
        if self.variant not in ("soft", "hard"):
            raise InputError(f"variant must be 'soft' or 'hard', not {self.variant!r}")


def _fit(model, sets, params: Params, **_) -> MethodResult:
    es = edits(model, params.keep_fraction, params.variant)
    probe = (sets.get("all") or [])[:64]    # the GUI's loaded prompts: measure on them
    rep = measure(model, probe, params.keep_fraction, params.variant) if probe else None
    return MethodResult(es, TopKFit(params.keep_fraction, params.variant, rep))


register(MethodSpec("topk", "Statistical top-k", ("lm",), (), Params, _fit,
                    "activation sparsity: keep about keep-fraction of each token's hook_pre "
                    "values, thresholded by mean + std * z"))
