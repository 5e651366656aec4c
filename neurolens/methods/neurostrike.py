"""NeuroStrike safety-neuron discovery and pruning (METHODS.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurolens.methods.common import layer_sites, probe_reduced
from neurolens.methods.registry import MethodResult, MethodSpec, Role, param, register
from neurolens.spec.edits import EditSet, ModelRef, Prune


def standardise(x: np.ndarray) -> np.ndarray:
    """Features [modules, n, d] to zero mean and unit (sample) deviation per module and feature,
    the units the probes are fitted and scored in."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, ddof=1, keepdims=True), 1e-8)


def logistic_probes(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 300,
                    lr: float = 0.5, bias: bool = False):
    """Fit one L2-regularised logistic regression per module at once.

    x: [modules, n, d] features, y: [n] labels in {0, 1}. Features are standardised per module
    (so weights compare across neurons); returns weights [modules, d] in standardised units,
    and with ``bias`` also the intercepts [modules].
    Full-batch gradient descent with Nesterov momentum, vectorised over modules.
    """
    import torch
    X = torch.as_tensor(standardise(x), dtype=torch.float64)
    Y = torch.as_tensor(y, dtype=torch.float64)[None, :]
    m, n, d = X.shape
    w = torch.zeros(m, d, dtype=torch.float64)
    b = torch.zeros(m, 1, dtype=torch.float64)
    vw, vb = torch.zeros_like(w), torch.zeros_like(b)
    for _ in range(iters):
        ww, bb = w + 0.9 * vw, b + 0.9 * vb
        z = torch.einsum("mnd,md->mn", X, ww) + bb
        g = torch.sigmoid(z) - Y                      # [m, n]
        gw = torch.einsum("mn,mnd->md", g, X) / n + l2 * ww
        gb = g.mean(1, keepdim=True)
        vw = 0.9 * vw - lr * gw
        vb = 0.9 * vb - lr * gb
        w, b = w + vw, b + vb
    return (w.numpy(), b[:, 0].numpy()) if bias else w.numpy()


def probe_accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per module, the share of rows the probes (``logistic_probes(..., bias=True)``) classify
    right, intercept included: x [modules, n, d], y [n], w [modules, d], b [modules]."""
    scores = np.einsum("mnd,md->mn", standardise(x), w) + b[:, None]
    return ((scores > 0) == (y[None] > 0.5)).mean(1)


#: the shares of layers (from the first) the paper prunes in
LAYER_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass
class NeuroStrikeReport:
    layers_fraction: float
    n_selected: int
    n_total: int
    per_module: dict[str, list[int]] = field(default_factory=dict)
    probe_accuracy: dict[str, float] = field(default_factory=dict)
    n_harmful: int = 0
    n_benign: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * self.n_selected / max(self.n_total, 1)

    def summary(self) -> str:
        return (f"NeuroStrike: {self.n_selected} safety neurons ({self.percent:.2f}% of FFN "
                f"neurons) pruned in the first {self.layers_fraction:.0%} of layers; "
                f"{self.n_harmful} harmful prompts against {self.n_benign} benign texts")

    def to_json(self) -> dict:
        return {"layers_fraction": self.layers_fraction, "n_selected": self.n_selected,
                "n_total": self.n_total, "percent": round(self.percent, 4),
                "n_harmful": self.n_harmful, "n_benign": self.n_benign,
                "per_module": {k: len(v) for k, v in self.per_module.items()},
                "probe_accuracy": {k: round(v, 3) for k, v in self.probe_accuracy.items()}}


def find_safety_neurons(lm, harmful: list[str], benign: list[str], z: float = 3.0,
                        kinds=("mlp.hook_pre", "mlp.hook_pre_linear"), batch_size: int = 16,
                        progress=None) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Per module: {site: neurons with |z| > z and positive weight}, and probe accuracies."""
    avail = set(lm.sites())
    sites = [s for k in kinds for s in layer_sites(lm, k) if s in avail]
    feats_h = probe_reduced(lm, harmful, sites, "max", batch_size, progress=progress)
    feats_b = probe_reduced(lm, benign, sites, "max", batch_size, progress=progress)
    x = np.stack([np.concatenate([feats_h[s], feats_b[s]]) for s in sites])  # [m, n, d]
    y = np.concatenate([np.ones(len(harmful)), np.zeros(len(benign))])
    w, b = logistic_probes(x, y, bias=True)
    acc = probe_accuracy(x, y, w, b)
    zs = (w - w.mean(1, keepdims=True)) / np.maximum(w.std(1, keepdims=True), 1e-12)
    out, accs = {}, {}
    for i, s in enumerate(sites):
        sel = np.nonzero((np.abs(zs[i]) > z) & (w[i] > 0))[0]
        out[s] = sel.tolist()
        accs[s] = float(acc[i])
    return out, accs


def fit(lm, harmful: list[str], benign: list[str], layers_fraction: float = 1.0, z: float = 3.0,
        batch_size: int = 16, progress=None) -> MethodResult:
    """Find safety neurons and prune them in the first ``layers_fraction`` of the layers.

    ``harmful``: the requests the model refuses, as prompts. ``benign``: what the model must
    keep doing, best its answered requests and skills as prompt + answer (``skill_texts``), so
    that neurons the benign answers need are not taken for safety neurons.
    """
    if layers_fraction not in LAYER_FRACTIONS:
        raise ValueError("layers_fraction must be 0.25, 0.5, 0.75 or 1.0")
    found, accs = find_safety_neurons(lm, harmful, benign, z, batch_size=batch_size,
                                      progress=progress)
    n_layers = lm.n_layers
    keep = int(np.ceil(layers_fraction * n_layers))
    ops, per_module = [], {}
    unique: set[tuple[int, int]] = set()
    for site, neurons in found.items():
        layer = int(site.split(".")[1])
        if layer >= keep or not neurons:
            continue
        ops.append(Prune(site, neurons, note="NeuroStrike safety neurons"))
        per_module[site] = neurons
        unique.update((layer, j) for j in neurons)
    width = lm.sites()["blocks.0.mlp.hook_post"]
    report = NeuroStrikeReport(layers_fraction, len(unique), n_layers * width, per_module, accs,
                               len(harmful), len(benign))
    edits = EditSet(ops, ModelRef(lm.name_or_path, lm.fingerprint))
    return MethodResult(edits, report, [(op.site, j) for op in ops for j in op.neurons])


@dataclass
class Params:
    layers_fraction: float = param(1.0, "prune in the first 0.25/0.5/0.75/1 of the layers",
                                   choices=LAYER_FRACTIONS, label="prune in first")
    z: float = param(3.0, "z-score threshold of the probe weights (3)")


def _fit(model, sets, params: Params, progress=None, **_) -> MethodResult:
    # the module's ``fit`` looked up at call time (tests wrap it)
    return fit(model, sets["harmful"], sets["benign"], layers_fraction=params.layers_fraction,
               z=params.z, progress=progress)


register(MethodSpec(
    "neurostrike", "NeuroStrike", ("lm",),
    (Role("harmful", "requests the model refuses"),
     Role("benign", "what the model must keep doing, the requests it answers and its skills "
          "(one file or several)", answered=True, many=True, differs_from="harmful")),
    Params, _fit, "safety neurons: probe harmful against benign texts, prune the safety "
    "neurons"))
