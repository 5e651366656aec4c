"""Neuron Adjust (skill unlearning by intervention; METHODS.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurolens.errors import InputError
from neurolens.methods.common import layer_sites, probe_stats
from neurolens.methods.common import skill_texts  # defined here before; still importable
from neurolens.methods.registry import MethodResult, MethodSpec, Role, param, register
from neurolens.spec.edits import Adjust, EditSet, ModelRef


__all__ = ["NeuronAdjustReport", "Params", "fit", "skill_texts"]


@dataclass
class NeuronAdjustReport:
    p: float
    n_selected: int
    n_total: int
    per_layer: dict[str, int] = field(default_factory=dict)
    top: list[tuple[str, int, float]] = field(default_factory=list)   # (site, neuron, delta)

    def summary(self) -> str:
        return (f"Neuron Adjust: {self.n_selected} of {self.n_total} neurons ({self.p:.1%}) "
                "selected by forget − retain mean of hook_pre")

    def to_json(self) -> dict:
        return {"p": self.p, "n_selected": self.n_selected, "n_total": self.n_total,
                "per_layer": self.per_layer,
                "top": [[s, i, round(d, 4)] for s, i, d in self.top[:20]]}


def fit(lm, forget: list[str], retain: list[str], p: float = 0.03, seed: int = 0,
        kind: str = "mlp.hook_pre", batch_size: int = 16, progress=None
        ) -> MethodResult:
    """Probe forget/retain sets on ``kind`` of every layer (all tokens), pick the top ``p`` of
    all neurons by signed mean difference (forget - retain), and return one Adjust op per layer.
    """
    if not 0 < p <= 1:
        raise ValueError("p must be in (0, 1]")
    sites = layer_sites(lm, kind)
    sf = probe_stats(lm, forget, sites, batch_size, progress=progress)
    sr = probe_stats(lm, retain, sites, batch_size, progress=progress)
    deltas = np.concatenate([sf[s].mean - sr[s].mean for s in sites])
    widths = [sf[s].width for s in sites]
    n_total = int(sum(widths))
    k = max(1, int(round(p * n_total)))
    order = np.argsort(-deltas, kind="stable")[:k]
    offsets = np.cumsum([0] + widths)
    ops, per_layer, top = [], {}, []
    for li, site in enumerate(sites):
        sel = np.sort(order[(order >= offsets[li]) & (order < offsets[li + 1])] - offsets[li])
        if not len(sel):
            continue
        f, r = sf[site], sr[site]
        eps = 1e-6
        ops.append(Adjust(site, sel.tolist(),
                          mean_f=f.mean[sel].astype(np.float32),
                          std_f=np.maximum(f.std()[sel], eps).astype(np.float32),
                          mean_r=r.mean[sel].astype(np.float32),
                          std_r=np.maximum(r.std()[sel], eps).astype(np.float32),
                          seed=seed + li, note=f"Neuron Adjust top {p:.1%}"))
        per_layer[site] = len(sel)
    for j in order[:50]:
        li = int(np.searchsorted(offsets, j, side="right") - 1)
        top.append((sites[li], int(j - offsets[li]), float(deltas[j])))
    report = NeuronAdjustReport(p, k, n_total, per_layer, top)
    edits = EditSet(ops, ModelRef(lm.name_or_path, lm.fingerprint))
    return MethodResult(edits, report, [(op.site, j) for op in ops for j in op.neurons])


@dataclass
class Params:
    p: float = param(0.03, "top fraction of all hook_pre neurons (0.03)", label="top p")
    seed: int = param(0, "seed of the replacement draws")

    def check(self) -> None:
        if not 0 < self.p < 1:
            raise InputError(f"p must lie between 0 and 1, got {self.p}")


def _fit(model, sets, params: Params, progress=None, **_) -> MethodResult:
    return fit(model, sets["forget"], sets["retain"], p=params.p, seed=params.seed,
               progress=progress)


register(MethodSpec(
    "neuron-adjust", "Neuron Adjust", ("lm",),
    (Role("forget", "prompts of the skill to forget", answered=True),
     Role("retain", "prompts of the skills to keep (one file or several)", answered=True,
          many=True, differs_from="forget")),
    Params, _fit, "skill unlearning: move forget-like values of the most forget-specific "
    "neurons to the retain distribution"))
