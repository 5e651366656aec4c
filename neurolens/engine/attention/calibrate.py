"""Calibrated attention top-k: fit the quantile offsets of ``attn_topk`` ops with ``calibrate``.

The paper's rule keeps the keys scoring above ``mean + std * Phi^-1(1 - k/n)``; where a layer's
scores are not Gaussian the realised count misses k (the demo model: 0.87 to 1.17 k). A
calibrated op keeps above ``mean + std * (Phi^-1(1 - k/n) + dz)`` with one ``dz`` per layer (or
per layer x head) fitted here on a prompt set so that the mean realised count over the queries
the op acts on equals the mean k there. The offsets go into the op (``z_offset``), so a run, an
export's sidecar and ``nl.load`` reproduce them without refitting.

Layers are fitted in order: layer L's scores are read with the already fitted operator acting
on the layers below it (as a run with the edit sees them). The count of one query under an
offset ``d`` is ``max(#{t > d}, #{keys tied at the top})`` with ``t = (s - mean) / std - z``
(the rule of :func:`~neurolens.engine.attention.ops.stat_keep`: the top key always stays);
the mean count is non-increasing in ``d``, found by bisection.
"""

from __future__ import annotations

import copy
from statistics import NormalDist

import numpy as np

from neurolens.errors import InputError
from neurolens.spec.sites import parse_site

#: bisection steps (the bracket [-16, 16] shrinks to ~1e-8)
STEPS = 40
BRACKET = 16.0


def query_rows(scores: np.ndarray, k: float | None = None, keep_fraction: float | None = None,
               min_context: int = 0):
    """The queries an op acts on in one prompt's scores ``[heads, q, n]`` (keys a query may not
    see: -inf): ``(t [rows, n], ties [rows], target k [rows], head [rows])`` with ``t`` the
    standardised scores minus the quantile (``-inf`` where not visible, and for every key of a
    query whose scores are all equal), ``ties`` the keys at the top score."""
    s = np.asarray(scores, np.float64)
    H, Q, N = s.shape
    s = s.reshape(H * Q, N)
    vis = np.isfinite(s)
    n = vis.sum(1)
    kk = np.full(len(n), float(k)) if k is not None else n * float(keep_fraction)
    act = (n >= max(min_context, 1)) & (kk < n)
    s, vis, n, kk = s[act], vis[act], n[act], kk[act]
    head = np.repeat(np.arange(H), Q)[act]
    x = np.where(vis, s, 0.0)
    mean = x.sum(1, keepdims=True) / n[:, None]
    std = np.sqrt(np.where(vis, (s - mean) ** 2, 0.0).sum(1, keepdims=True) / n[:, None])
    nd = NormalDist()
    z = np.array([nd.inv_cdf(min(max(1.0 - a / b, 1e-7), 1 - 1e-7)) for a, b in zip(kk, n)])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(vis & (std > 0), (s - mean) / std - z[:, None], -np.inf)
    top = np.where(vis, s, -np.inf).max(1, keepdims=True)
    ties = (vis & (s >= top)).sum(1)
    return t, ties, kk, head


def mean_count(t: np.ndarray, ties: np.ndarray, offset: float) -> float:
    """Mean kept keys per query under ``offset``."""
    return float(np.maximum((t > offset).sum(1), ties).mean())


def fit_offset(t: np.ndarray, ties: np.ndarray, target: float) -> float:
    """The offset whose mean kept count is nearest ``target`` (bisection on a step function:
    of the two ends of the final bracket, the nearer)."""
    if not len(t):
        return 0.0
    lo, hi = -BRACKET, BRACKET                       # count(lo) >= target >= count(hi)
    for _ in range(STEPS):
        mid = 0.5 * (lo + hi)
        if mean_count(t, ties, mid) >= target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda d: (abs(mean_count(t, ties, d) - target), abs(d)))


def fit_rows(rows, per: str, heads: int):
    """One offset (``per="layer"``) or one per head (``"head"``) from :func:`query_rows` of
    every prompt of one layer."""
    t_list, ties, kk, head = zip(*rows) if rows else ((), (), (), ())
    width = max((a.shape[1] for a in t_list), default=0)
    t = np.full((sum(len(a) for a in t_list), width), -np.inf)
    r = 0
    for a in t_list:
        t[r:r + len(a), :a.shape[1]] = a
        r += len(a)
    ties, kk, head = (np.concatenate(v) if v else np.zeros(0) for v in (ties, kk, head))
    if per == "layer":
        return float(fit_offset(t, ties, float(kk.mean()) if len(kk) else 0.0))
    return [float(fit_offset(t[head == h], ties[head == h],
                             float(kk[head == h].mean()) if (head == h).any() else 0.0))
            for h in range(heads)]


def calibrate(model, edits, prompts, batch_size: int = 8, progress=None, cancel=None):
    """A copy of ``edits`` whose ``attn_topk`` ops with ``calibrate`` set hold offsets fitted on
    ``prompts`` (see the module docstring); other ops are kept as they are and act while the
    scores are read. ``progress(done, total)`` per layer fitted."""
    from neurolens.engine.attention.heads import geometry
    from neurolens.spec.edits import EditSet
    from neurolens.spec.head_edits import AttnTopK
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InputError("calibrating attention top-k needs prompts")
    out = EditSet([copy.deepcopy(op) for op in edits])
    todo = [op for op in out if op.op == "attn_topk" and op.calibrate and op.enabled]
    waiting = {id(op) for op in todo}
    if not todo:
        raise InputError("no attn_topk op with calibrate ('layer' or 'head') to fit")
    g = geometry(model)
    plans = [(op, [parse_site(s).layer for s in model.resolve_sites(op.site)]) for op in todo]
    total, done = sum(len(ls) for _, ls in plans), 0
    for op, layers in plans:
        op.z_offset = {}
        for layer in sorted(layers):
            # everything else as it is; this op only on the layers below, already fitted
            below = [AttnTopK(f"blocks.{i}.attn.hook_attn_scores", k=op.k,
                              keep_fraction=op.keep_fraction, min_context=op.min_context,
                              calibrate=op.calibrate, z_offset={str(i): op.z_offset[str(i)]})
                     for i in sorted(layers) if i < layer]
            rest = [o for o in out if id(o) not in waiting]
            site = f"blocks.{layer}.attn.hook_attn_scores"
            rows = []
            for i in range(0, len(prompts), batch_size):
                if cancel is not None and cancel.cancelled:
                    from neurolens.errors import Cancelled
                    raise Cancelled("calibration cancelled")
                cap = model.attention(prompts[i:i + batch_size], site,
                                      edits=EditSet(rest + below), batch_size=batch_size)
                rows += [query_rows(a, op.k, op.keep_fraction, op.min_context)
                         for a in cap[site]]
            op.z_offset[str(layer)] = fit_rows(rows, op.calibrate, g.n_heads)
            done += 1
            if progress is not None:
                progress(done, total)
        op.check("edit")
        waiting.discard(id(op))
        n = len(prompts)
        op.note = (op.note + "; " if op.note else "") + \
            f"offsets fitted per {op.calibrate} on {n} prompt{'s' * (n != 1)}"
    return out
