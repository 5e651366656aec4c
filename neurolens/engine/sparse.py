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


def _sparse_forward(mlp, keep_fraction: float, stats: dict):
    z = NormalDist().inv_cdf(1.0 - keep_fraction)
    act = mlp.act_fn
    w_up = mlp.up_proj.weight          # [d_ff, d]
    w_down = mlp.down_proj.weight      # [d, d_ff]

    def forward(x: torch.Tensor) -> torch.Tensor:
        g = mlp.gate_proj(x)
        theta = g.mean(-1, keepdim=True) + g.std(-1, keepdim=True, unbiased=False) * z
        if x.shape[:-1].numel() == 1:                     # one token: gather the active rows
            gv = g.reshape(-1)
            idx = torch.nonzero(gv > theta.reshape(()), as_tuple=True)[0]
            stats["active"] = stats.get("active", 0) + idx.numel()
            stats["total"] = stats.get("total", 0) + gv.numel()
            xv = x.reshape(-1)
            a = act(gv[idx] - theta.reshape(())) * (w_up[idx] @ xv)
            return (w_down[:, idx] @ a).reshape(x.shape[:-1] + (w_down.shape[0],))
        gs = torch.clamp_min(g - theta, 0.0)
        return mlp.down_proj(act(gs) * mlp.up_proj(x))
    return forward


@contextlib.contextmanager
def sparse_ffn(lm, keep_fraction: float = 0.08):
    """Patch the gated MLPs of ``lm`` for sparse decoding; restored on exit (also on error).
    Yields a dict with the counts of active and total neurons seen in decode steps."""
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
