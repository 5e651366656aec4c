"""Memorization subspace in diffusion UNets (METHODS.md section 5).

Per denoising step t < tau and FFN block l, X = the input of ``ff.net.2`` (all spatial tokens of
all prompts, both classifier-free-guidance halves), each row L2-normalised. Column norms
``||X_j||`` give Wanda scores ``S_ij = |W_ij| * ||X_j||``. A weight is in the mask when it is in the
top rho of its row of S for the memorized (target) set and scores higher there than for the base
set. The masks of the first tau steps are OR-ed; deleting the weights (``W <- W * (1 - M)``) is a
:class:`~neurolens.spec.edits.MaskWeights` edit per block, which export bakes exactly.

Design note: column norms are taken over the mean of the squared rows (an RMS), not the sum, so
a target set and a base set of different sizes compare fairly; with equal sizes the mask is the
same as with the paper's sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from neurolens.errors import InputError
from neurolens.methods.registry import MethodResult, MethodSpec, Role, param, register
from neurolens.spec.edits import EditSet, MaskWeights

if TYPE_CHECKING:   # torch loads with the engine, not with the method registry (CLI start-up)
    import torch

TAU = 10
RHO = 0.01


class _ColumnNorms:
    """Read handler: per step, sum over rows of the squared L2-normalised rows."""

    def __init__(self, tau: int):
        self.tau = tau
        self.sq: dict[int, torch.Tensor] = {}
        self.rows: dict[int, int] = {}

    def __call__(self, x: torch.Tensor, state):
        t = state.step
        if t is None or t >= self.tau:
            return None
        x = x.detach().float().reshape(-1, x.shape[-1])
        xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        s = (xn * xn).sum(0)
        self.sq[t] = self.sq[t] + s if t in self.sq else s
        self.rows[t] = self.rows.get(t, 0) + x.shape[0]
        return None

    def norms(self) -> dict[int, np.ndarray]:
        return {t: (self.sq[t] / self.rows[t]).sqrt().cpu().numpy() for t in self.sq}


def column_norms(dm, prompts: list[str], *, tau: int = TAU, steps: int = 20,
                 guidance: float = 3.0, seed: int = 0, batch_size: int = 16,
                 cancel=None, progress=None) -> dict[str, dict[int, np.ndarray]]:
    """site -> step -> RMS column norm of the L2-normalised rows (first ``tau`` steps)."""
    from neurolens.engine.events import drain
    sites = list(dm.sites())
    handlers = {s: _ColumnNorms(tau) for s in sites}
    done = 0
    for a in range(0, len(prompts), batch_size):
        chunk = prompts[a:a + batch_size]
        drain(dm.denoise_events(chunk, captures=handlers, steps=steps, guidance=guidance,
                                seed=seed + a, cancel=cancel), what="denoising")
        done += len(chunk)
        if progress:
            progress(done, len(prompts))
    return {s: h.norms() for s, h in handlers.items()}


def masks_from_norms(dm, target: dict, base: dict, *, rho: float = RHO,
                     tau: int = TAU) -> dict[str, np.ndarray]:
    """site -> bool mask [out, in] (union over steps < tau)."""
    out = {}
    for site in target:
        w = dm.resolve(site).module.weight.detach().abs().float().cpu().numpy()   # [out, in]
        k = max(1, int(round(rho * w.shape[1])))
        m = np.zeros(w.shape, dtype=bool)
        for t, nt in target[site].items():
            if t >= tau:
                continue
            st = w * nt[None, :]
            sb = w * base[site][t][None, :]
            top = np.argpartition(-st, k - 1, axis=1)[:, :k]
            sel = np.zeros_like(m)
            np.put_along_axis(sel, top, True, axis=1)
            m |= sel & (st > sb)
        out[site] = m
    return out


def iou(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    inter = sum(int((a[s] & b[s]).sum()) for s in a)
    union = sum(int((a[s] | b[s]).sum()) for s in a)
    return inter / union if union else 0.0


@dataclass
class MemorizationResult:
    edits: EditSet
    masks: dict[str, np.ndarray]
    report: dict = field(default_factory=dict)
    base_norms: dict = field(default_factory=dict)   # reusable for another memorized set


def find_subspace(dm, memorized: list[str], base: list[str], *, rho: float = RHO,
                  tau: int = TAU, steps: int = 20, guidance: float = 3.0, seed: int = 0,
                  base_norms: dict | None = None, cancel=None,
                  progress=None) -> MemorizationResult:
    """Masks for a memorized prompt set against a base set, as a MaskWeights EditSet."""
    tgt = column_norms(dm, memorized, tau=tau, steps=steps, guidance=guidance, seed=seed,
                       cancel=cancel, progress=progress)
    bas = base_norms or column_norms(dm, base, tau=tau, steps=steps, guidance=guidance,
                                     seed=seed + 10_000, cancel=cancel)
    masks = masks_from_norms(dm, tgt, bas, rho=rho, tau=tau)
    ops = [MaskWeights(s, m.astype(np.uint8),
                       note=f"memorization subspace (rho {rho:g}, tau {tau})")
           for s, m in masks.items() if m.any()]
    total = sum(m.size for m in masks.values())
    n = sum(int(m.sum()) for m in masks.values())
    report = {"rho": rho, "tau": tau, "weights_deleted": n, "ffn_out_weights": total,
              "fraction": n / total if total else 0.0,
              "per_site": {dm.aliases()[s]: int(m.sum()) for s, m in masks.items()}}
    return MemorizationResult(EditSet(ops), masks, report, bas)


class MemorizationReport(dict):
    """The report dict of :func:`find_subspace` with a summary line."""

    def summary(self) -> str:
        return (f"Memorization subspace: {self['weights_deleted']} of {self['ffn_out_weights']} "
                f"FFN output weights ({self['fraction']:.2%}) in the mask (rho "
                f"{self['rho']:.1%}, first {self['tau']} steps)")

    def to_json(self) -> dict:
        return dict(self)


@dataclass
class Params:
    rho: float = param(RHO, "top share of each output row of the Wanda scores (0.01)")
    tau: int = param(TAU, "union of the masks of the first tau denoising steps (10)",
                     label="tau (steps)")
    steps: int = param(20, "denoising steps of the probe runs (at least tau)")

    def check(self) -> None:
        if not 0 < self.rho < 1:
            raise InputError(f"rho must lie between 0 and 1, got {self.rho}")
        if self.tau < 1:
            raise InputError(f"tau must be >= 1, got {self.tau}")


def _fit(model, sets, params: Params, progress=None, cancel=None, **_) -> MethodResult:
    res = find_subspace(model, sets["target"], sets["base"], rho=params.rho, tau=params.tau,
                        steps=max(params.steps, params.tau), cancel=cancel, progress=progress)
    return MethodResult(res.edits, MemorizationReport(res.report),
                        extra={"masks": res.masks})


register(MethodSpec(
    "memorization", "Memorization subspace", ("diffusion",),
    (Role("target", "memorized prompts (the set to stop reproducing)"),
     Role("base", "ordinary prompts", differs_from="target")),
    Params, _fit, "diffusion: delete the FFN weights that memorized prompts rely on"))
