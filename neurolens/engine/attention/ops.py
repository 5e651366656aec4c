"""Engine side of the head ops and of attention top-k (see :mod:`neurolens.spec.head_edits`).

Head ops are hooks on ``hook_z`` (the output projection's input, ``heads x d_head`` columns,
head-major); export bakes prune and scale exactly into the projection's input columns (rows of
GPT-2's ``Conv1D``), and a mean ablation into its bias where it has one (else a sidecar).
Attention top-k edits the scores before the softmax through the run's
:class:`~neurolens.engine.attention.scope.AttentionPlan` (eager attention); it is conditional,
so export keeps it in the sidecar that ``nl.load`` re-applies. One-query decode steps compute it
sparsely instead (:mod:`~neurolens.engine.attention.decode`, same result to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neurolens.engine.attention.heads import check_heads, geometry, head_columns
from neurolens.engine.attention.scope import plan_of, visible
from neurolens.engine.baking import BakeTarget
from neurolens.engine.hooks import RunState
from neurolens.engine.ops import position_mask, register
from neurolens.errors import InputError
from neurolens.spec.sites import parse_site


@dataclass
class HeadBakeTarget(BakeTarget):
    """The output projection that reads ``hook_z``, with the head size."""

    d_head: int = 0


def head_bake_target(model, o_proj_view) -> HeadBakeTarget:
    return HeadBakeTarget(reads=o_proj_view, d_head=geometry(model).d_head)


def _cols(op, t: BakeTarget) -> list[int] | None:
    if not isinstance(t, HeadBakeTarget) or t.reads is None:
        return None
    return [h * t.d_head + j for h in op.heads for j in range(t.d_head)]


def _bake_prune_head(op, t: BakeTarget) -> bool:
    cols = _cols(op, t)
    if cols is None:
        return False
    t.reads.scale_inputs(cols, 0.0)
    return True


def _bake_scale_head(op, t: BakeTarget) -> bool:
    cols = _cols(op, t)
    if cols is None:
        return False
    t.reads.scale_inputs(cols, op.factor)
    return True


def _bake_mean_ablate_head(op, t: BakeTarget) -> bool:
    """y = W z + b with z_cols held at m: b += W[:, cols] m, W[:, cols] = 0 (needs a bias)."""
    cols = _cols(op, t)
    if cols is None or t.reads.bias is None:
        return False
    w, bias, j = t.reads.w, t.reads.bias, torch.tensor(cols)
    m = torch.as_tensor(np.asarray(op.mean, np.float32).reshape(-1))
    bias += (w[:, j].double() @ m.double()).to(w.dtype)
    w[:, j] *= 0.0
    return True


class _HeadHandler:
    def __init__(self, op, ref, ctx):
        self.op = op
        model = ctx["model"]
        check_heads(model, op.site, op.heads)
        self.g = geometry(model)
        self.cols = head_columns(self.g, op.heads)
        self._t: dict = {}

    def idx(self, device) -> torch.Tensor:
        t = self._t.get(device)
        if t is None:
            t = self._t[device] = torch.tensor(self.cols, dtype=torch.long, device=device)
        return t

    def __call__(self, x: torch.Tensor, state: RunState):
        idx = self.idx(x.device)
        cur = x[..., idx]
        new = self.transform(cur).to(x.dtype)
        mask = position_mask(self.op.positions, state, x.device)
        if mask is not None:
            new = torch.where(mask[..., None], new, cur)
        x[..., idx] = new
        return x

    def transform(self, cur):
        raise NotImplementedError


@register("prune_head", kinds=("lm",), bake=_bake_prune_head)
class PruneHeadHandler(_HeadHandler):
    def transform(self, cur):
        return torch.zeros_like(cur)


@register("scale_head", kinds=("lm",), bake=_bake_scale_head)
class ScaleHeadHandler(_HeadHandler):
    def transform(self, cur):
        return cur * self.op.factor


@register("mean_ablate_head", kinds=("lm",), bake=_bake_mean_ablate_head)
class MeanAblateHeadHandler(_HeadHandler):
    def __init__(self, op, ref, ctx):
        super().__init__(op, ref, ctx)
        m = np.asarray(op.mean, dtype=np.float32)
        if m.shape != (len(op.heads), self.g.d_head):
            raise InputError(f"{op.site}: mean has shape {m.shape}, the heads need "
                             f"({len(op.heads)}, {self.g.d_head}) (d_head {self.g.d_head})")
        self.mean = torch.from_numpy(m.reshape(-1))

    def transform(self, cur):
        return self.mean.to(cur.device, cur.dtype).expand_as(cur)


# -- attention top-k ----------------------------------------------------------------------------
def stat_keep(scores: torch.Tensor, vis: torch.Tensor, k: torch.Tensor, mode: str,
              offset=0.0) -> torch.Tensor:
    """Keys kept per query (``[..., n]`` bool): statistical (mean + std * (Phi^-1(1 - k/n) +
    ``offset``) over the visible keys, population std; the highest key always stays; ``offset``
    a number or a tensor broadcasting to ``[..., 1]``, 0 for the paper's rule) or exact (the k
    highest)."""
    n = vis.sum(-1, keepdim=True).clamp_min(1).to(scores.dtype)
    if mode == "exact":
        kk = k.round().clamp_min(1).long().clamp_max(scores.shape[-1])
        srt = scores.masked_fill(~vis, float("-inf")).sort(-1, descending=True).values
        kth = srt.gather(-1, (kk - 1).expand(*srt.shape[:-1], 1))
        return vis & (scores >= kth)
    xs = torch.where(vis, scores, 0.0)
    mean = xs.sum(-1, keepdim=True) / n
    var = torch.where(vis, (scores - mean) ** 2, 0.0).sum(-1, keepdim=True) / n
    z = torch.special.ndtri((1.0 - k / n).clamp(1e-7, 1 - 1e-7)) + offset
    theta = mean + z * var.sqrt()
    top = scores.masked_fill(~vis, float("-inf")).amax(-1, keepdim=True)
    return vis & ((scores > theta) | (scores >= top))


class AttnTopKEditor:
    """Masks the scores a query does not keep (see :class:`~neurolens.spec.head_edits.AttnTopK`)
    and counts the realised attended keys per query in ``ctx["attn_topk_stats"][layer]``:
    ``[kept, target k, queries]`` summed over the queries it acted on (every head)."""

    #: one-query steps may take :func:`neurolens.engine.attention.decode.sparse_decode`
    sparse_decode = True

    def __init__(self, op, layer: int, ctx: dict):
        self.op, self.layer = op, layer
        self.stats = ctx.setdefault("attn_topk_stats", {})
        off = op.layer_offset(layer)
        if off is None:
            raise InputError(f"attn_topk at {op.site}: calibrate={op.calibrate!r} has no fitted "
                             f"offset for layer {layer}: fit it first (neurolens.engine."
                             "attention.calibrate)")
        #: the calibrated quantile offset: a number, or a tensor [heads, 1, 1] (per head)
        self.offset = (torch.tensor(off, dtype=torch.float32).view(-1, 1, 1)
                       if isinstance(off, list) else float(off))
        #: the sparse decode steps of the sequence so far and their transposed key cache
        #: (decode.keys_t)
        self.decode_steps, self.decode_keys = 0, None

    def _offset(self, heads: int):
        if isinstance(self.offset, float):
            return self.offset
        if self.offset.shape[0] != heads:
            raise InputError(f"attn_topk at {self.op.site}: {self.offset.shape[0]} per-head "
                             f"offsets for layer {self.layer}, which has {heads} query heads")
        return self.offset

    def keep(self, x: torch.Tensor, state: RunState) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kept, dropped)`` keys of the scores ``x`` ``[b, heads, q, n]`` (kept: the visible
        keys a query keeps; every visible key where the op does not act), counted."""
        op = self.op
        xf = x.float()
        vis = visible(x)
        n = vis.sum(-1, keepdim=True).float()
        k = (torch.full_like(n, float(op.k)) if op.k is not None else n * op.keep_fraction)
        act = (n >= max(op.min_context, 1)) & (k < n)
        am = state.attention_mask
        if am is not None:                      # real (non-pad) queries only
            q = x.shape[-2]
            act &= am[:, -q:].to(x.device).bool()[:, None, :, None]
        keep = stat_keep(xf, vis, k, op.mode, self._offset(x.shape[1]))
        drop = act & vis & ~keep
        kept = (keep & act).sum(-1).float()
        acc = self.stats.setdefault(self.layer, [0.0, 0.0, 0])
        acc[0] += float(kept.sum())
        acc[1] += float((k * act).sum())
        acc[2] += int(act.sum())
        return vis & ~drop, drop

    def __call__(self, x: torch.Tensor, state: RunState) -> torch.Tensor:
        self.decode_steps, self.decode_keys = 0, None    # an eager step (a prefill): restart
        _, drop = self.keep(x, state)
        return x.masked_fill(drop, torch.finfo(x.dtype).min)


def _topk_hooks(op, model, ctx) -> list:
    s = parse_site(op.site)
    if s is None or s.kind != "attn.hook_attn_scores":
        raise InputError(f"{op.site}: attention top-k acts on blocks.L.attn.hook_attn_scores")
    geometry(model)
    plan_of(ctx).add_editor(s.layer, AttnTopKEditor(op, s.layer, ctx))
    return []


def _no_single_hook(op, ref, ctx):   # pragma: no cover - planned through the attention plan
    raise InputError("attention top-k runs inside the attention (see its hooks)")


register("attn_topk", kinds=("lm",), hooks=_topk_hooks)(_no_single_hook)


def topk_summary(ctx: dict) -> dict[int, dict]:
    """Per layer: mean kept keys per query and mean target k (over the queries acted on)."""
    out = {}
    for layer, (kept, k, nq) in sorted(ctx.get("attn_topk_stats", {}).items()):
        if nq:
            out[layer] = {"kept": kept / nq, "k": k / nq, "queries": nq}
    return out


def mean_ablation(model, site: str, heads, prompts, batch_size: int = 8):
    """A :class:`~neurolens.spec.head_edits.MeanAblateHead` holding the heads' mean output over
    every token of ``prompts`` (``site``: one ``blocks.L.attn.hook_z``)."""
    from neurolens.spec.head_edits import MeanAblateHead
    s = parse_site(site)
    if s is None or s.kind != "attn.hook_z":
        raise InputError(f"{site}: mean ablation needs a blocks.L.attn.hook_z site")
    check_heads(model, site, heads)
    g = geometry(model)
    cap = model.capture(list(prompts), [site], batch_size=batch_size)
    z = np.concatenate([np.asarray(a, np.float64) for a in cap[site]], 0)
    mean = np.stack([z[:, head_columns(g, [h])].mean(0) for h in heads]).astype(np.float32)
    return MeanAblateHead(site, list(heads), mean,
                          note=f"mean over {len(z)} tokens of {len(cap.prompts)} prompts")
