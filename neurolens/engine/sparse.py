"""Sparse FFN decoding for the statistical top-k edit (the Spark paper's claim, post hoc).

Inside :func:`sparse_ffn`, every gated MLP computes its gate projection densely, picks the
neurons above the statistical threshold, and computes only those rows of the up projection and
those columns of the down projection. For single-token forwards (decoding) that is where the
FLOPs go; longer forwards (the prompt) fall back to the dense formula with the same mask, so the
outputs equal those of the (non-sparse) ``topk`` edit with the soft variant.
"""

from __future__ import annotations

import contextlib
from statistics import NormalDist

import torch

from neurolens.engine.method_ops import stat_threshold


def _down_rows(mlp) -> torch.Tensor:
    """The down projection's columns as contiguous rows, so gathering the active neurons reads
    d contiguous floats per neuron instead of d strided ones. One copy per module, kept on the
    module and remade only when the weight changes (its version counter moves)."""
    w = mlp.down_proj.weight
    key = (w.data_ptr(), w._version)
    cached = mlp.__dict__.get("_neurolens_down_rows")
    if cached is None or cached[0] != key:
        cached = (key, w.detach().t().contiguous())
        mlp.__dict__["_neurolens_down_rows"] = cached
    return cached[1]


def _sparse_forward(mlp, keep_fraction: float, stats: dict):
    z = NormalDist().inv_cdf(1.0 - keep_fraction)
    act = mlp.act_fn
    w_up = mlp.up_proj.weight                          # [d_ff, d]
    w_down_t = _down_rows(mlp)                         # [d_ff, d]

    def forward(x: torch.Tensor) -> torch.Tensor:
        g = mlp.gate_proj(x)
        theta = stat_threshold(g, z)
        if x.shape[:-1].numel() == 1:                     # one token: gather the active rows
            gv = g.reshape(-1)
            idx = torch.nonzero(gv > theta.reshape(()), as_tuple=True)[0]
            stats["active"] = stats.get("active", 0) + idx.numel()
            stats["total"] = stats.get("total", 0) + gv.numel()
            xv = x.reshape(-1)
            a = act(gv[idx] - theta.reshape(())) * (w_up[idx] @ xv)
            return (a @ w_down_t[idx]).reshape(x.shape[:-1] + (w_down_t.shape[1],))
        gs = torch.clamp_min(g - theta, 0.0)
        return mlp.down_proj(act(gs) * mlp.up_proj(x))
    return forward


@contextlib.contextmanager
def sparse_ffn(lm, keep_fraction: float = 0.08):
    """Patch the gated MLPs of ``lm`` for sparse decoding; restored on exit (also on error).
    Yields a dict with the counts of active and total neurons seen in decode steps.

    Memory: the first use keeps one transposed copy of every down projection (a third of the
    FFN weights) on its module, reused by later uses."""
    arch = lm.adapter.arch
    if arch is None or arch.up is None or arch.up == arch.pre:
        raise ValueError("sparse decoding needs a gated MLP with separate gate/up projections")
    from neurolens.engine.adapters import get_module
    stats: dict = {}
    patched = []
    try:
        for layer in range(lm.n_layers):
            mlp = get_module(lm.hf, f"{lm.adapter.layers_path}.{layer}.mlp")
            patched.append(mlp)
            mlp.forward = _sparse_forward(mlp, keep_fraction, stats)
        yield stats
    finally:
        for mlp in patched:
            if "forward" in mlp.__dict__:
                del mlp.forward
