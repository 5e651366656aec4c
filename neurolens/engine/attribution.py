"""Causal neuron scores: which neurons of the chosen FFN sites move a metric of the answer.

Three methods, all signed the same way: a neuron's effect is how much its clean activation,
against the corrupted one, raises the metric (``metric(clean) - metric(clean with that neuron
patched to its corrupted value)``), averaged over the prompts:

- ``exact``: activation patching. Many patched copies of each prompt run in one batch (a row per
  neuron, or per block of neurons); one forward per ``batch`` rows.
- ``attribution``: attribution patching, ``(a_clean - a_corrupted) . d metric / d a`` at the
  clean run: one forward and one backward for every neuron of every site, per position.
- ``gradxact``: gradient x activation, ``a . d metric / d a`` (attribution patching against a
  zero ablation).

The corrupted activations come from corrupted prompts of the same token lengths, or from a mean
(over a chosen prompt set; default the clean prompts) or zero ablation. The normal runs go
through ``torch.inference_mode``; attribution has its own path with gradients on, and every hook
lives in a :class:`~neurolens.engine.hooks.HookSession`, so it is gone after every run, also one
that raised. The metric and its tokenization rule: :mod:`neurolens.engine.attribution_metric`.

Attention heads (``per="head"`` on ``blocks.L.attn.hook_z`` sites, the output projection's input
viewed as heads x d_head): a head is the block of its d_head columns. Exact patching patches the
whole block at once; the gradient methods sum the per-column terms over the block, which is
exactly attribution patching of the block (the linear approximation is additive).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from neurolens.engine.attribution_metric import (Setup, build_setup, check_head_sites,
                                                 check_neuron_sites, encode_prompt, metric_rows)
from neurolens.engine.attribution_prefix import CleanPrefix
from neurolens.engine.attribution_result import Attribution
from neurolens.engine.hooks import CancelToken, HookSession, RunState
from neurolens.errors import Cancelled, InputError

METHODS = ("attribution", "gradxact", "exact")
ABLATIONS = ("mean", "zero")
UNITS = ("neuron", "head")


class _Record:
    """Keeps the site's tensor in the autograd graph (an edit handler returning a copy, so a
    fused half's gradient flows too) or, without gradients, a detached copy."""

    def __init__(self, grad: bool):
        self.grad, self.x = grad, None

    def __call__(self, x: torch.Tensor, state: RunState):
        if not self.grad:
            self.x = x.detach().clone()
            return None
        self.x = x.clone() if x.requires_grad else x.detach().clone().requires_grad_()
        return self.x


class _Patch:
    """Row block b of the batch (``copies`` rows each) takes the corrupted value where
    ``mask[b]`` (``[width]``, or ``[seq, width]`` for one position) is set."""

    def __init__(self, corr: torch.Tensor, mask: torch.Tensor):
        self.corr, self.mask = corr, mask                # corr [copies|1, seq|1, width]

    def __call__(self, x: torch.Tensor, state: RunState):
        B = self.mask.shape[0]
        x4 = x.reshape(B, x.shape[0] // B, *x.shape[1:])
        m = self.mask[:, None, None, :] if self.mask.ndim == 2 else self.mask[:, None]
        return torch.where(m, self.corr.to(x.dtype)[None], x4).reshape(x.shape)


def _session(model, edits, batch: int, seq: int) -> HookSession:
    state = RunState(batch=batch, seq=seq, prompt_index=list(range(batch)))
    return model.session_factory(edits)(state)


def _keep_arg(model, k: int) -> dict:
    try:
        names = inspect.signature(model.hf.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": k} if "logits_to_keep" in names else {}


def _run(model, ids: list[list[int]], sess: HookSession, keep: int) -> torch.Tensor:
    x = torch.tensor(ids, dtype=torch.long, device=model.device)
    with sess:
        return model.hf(input_ids=x, use_cache=False, **_keep_arg(model, keep)).logits


def _keep(setup: Setup, idx: list[int]) -> int:
    return max(len(setup.targets[i].good) for i in idx)


def _read(model, setup: Setup, ids, idx, sites, edits, patch=None):
    """A no-grad run of rows ``ids`` (prompts ``idx``): metrics and the sites' activations."""
    sess = _session(model, edits, len(ids), len(ids[0]))
    recs = {s: _Record(False) for s in sites}
    for s in sites:
        if patch is not None:
            sess.add(model.resolve(s), patch[s], True)
        sess.add(model.resolve(s), recs[s], False)
    with torch.no_grad():
        logits = _run(model, ids, sess, _keep(setup, idx))
        m = metric_rows(logits, [setup.targets[i] for i in idx])
    return m.double().cpu().numpy(), {s: r.x for s, r in recs.items()}


def _mean_acts(model, prompts: list[str], sites, edits) -> dict[str, torch.Tensor]:
    rows = [encode_prompt(model.tokenizer, p) for p in prompts]
    rows = [r for r in rows if r]
    if not rows:
        raise InputError("the mean-ablation prompt set is empty")
    by_len: dict[int, list[list[int]]] = {}
    for r in rows:
        by_len.setdefault(len(r), []).append(r)
    total: dict[str, torch.Tensor] = {}
    count = 0
    for group in by_len.values():
        sess = _session(model, edits, len(group), len(group[0]))
        recs = {s: _Record(False) for s in sites}
        for s in sites:
            sess.add(model.resolve(s), recs[s], False)
        with torch.no_grad():
            _run(model, group, sess, 1)
        for s, r in recs.items():
            v = r.x.double().sum((0, 1))
            total[s] = v if s not in total else total[s] + v
        count += len(group) * len(group[0])
    return {s: (v / count) for s, v in total.items()}


class _Corrupted:
    """The corrupted activations per site and group, and the corrupted metric."""

    def __init__(self, model, setup: Setup, sites, ablate, mean_prompts, edits, clean_prompts):
        self.groups: dict[int, dict[str, torch.Tensor]] = {}
        self.metric = np.zeros(setup.n)
        if setup.corrupt is not None:
            for g, idx in enumerate(setup.groups):
                m, acts = _read(model, setup, [setup.corrupt[i] for i in idx], idx, sites, edits)
                self.metric[idx] = m
                self.groups[g] = acts
            return
        if ablate == "mean":
            mean = _mean_acts(model, mean_prompts or clean_prompts, sites, edits)
        for g, idx in enumerate(setup.groups):
            T = len(setup.clean[idx[0]])
            vec = {s: (mean[s].to(model.hf.dtype) if ablate == "mean"
                       else torch.zeros(model.site_width(s), dtype=model.hf.dtype,
                                        device=model.device)) for s in sites}
            self.groups[g] = {s: v.expand(len(idx), T, v.shape[-1]) for s, v in vec.items()}
            full = {s: _Patch(self.groups[g][s], torch.ones(1, model.site_width(s),
                                                             dtype=torch.bool,
                                                             device=model.device))
                    for s in sites}
            m, _ = _read(model, setup, [setup.clean[i] for i in idx], idx, sites, edits, full)
            self.metric[idx] = m


def _gradients(model, setup: Setup, sites, corr: _Corrupted, method: str, edits):
    """Per prompt and site: effect arrays [tokens, width], and the clean metric."""
    per = {s: [None] * setup.n for s in sites}
    clean = np.zeros(setup.n)
    for g, idx in enumerate(setup.groups):
        ids = [setup.clean[i] for i in idx]
        sess = _session(model, edits, len(ids), len(ids[0]))
        recs = {s: _Record(True) for s in sites}
        for s in sites:
            sess.add(model.resolve(s), recs[s], True)
        with torch.inference_mode(False), torch.enable_grad():
            logits = _run(model, ids, sess, _keep(setup, idx))
            m = metric_rows(logits, [setup.targets[i] for i in idx])
            grads = torch.autograd.grad(m.sum(), [recs[s].x for s in sites], allow_unused=True)
        clean[idx] = m.detach().double().cpu().numpy()
        for s, gr in zip(sites, grads):
            a = recs[s].x.detach()
            if gr is None:
                gr = torch.zeros_like(a)
            base = a if method == "gradxact" else a - corr.groups[g][s].to(a.dtype)
            e = (base.double() * gr.double()).cpu().numpy()
            for j, i in enumerate(idx):
                per[s][i] = e[j]
    return per, clean


def _exact_rows(model, setup: Setup, sites, corr: _Corrupted,
                rows: list[dict[str, list[int]]], position, batch: int, edits,
                progress=None,
                cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Effect of patching each row's neurons (``{site: [neurons]}``, patched together) on the
    mean metric, and the clean metric per prompt; many patched copies of each prompt per
    forward. The clean run keeps the outputs of the blocks before each site
    (:class:`~neurolens.engine.attribution_prefix.CleanPrefix`): a forward patching a site of
    block L computes only block L (without its attention, for an FFN site) and the blocks
    after it, so rows are batched by the block they start from."""
    out = np.zeros(len(rows))
    clean = np.zeros(setup.n)
    # widths in the sites' order (a first width query adds the site to the model's list)
    widths = {s: model.site_width(s) for s in sites}
    prefix = CleanPrefix(model, sites)
    starts = [prefix.row_start([s for s in r if r[s]]) for r in rows]
    order = sorted(range(len(rows)), key=lambda j: starts[j], reverse=True)
    done, total = 0, len(rows) * len(setup.groups)
    for g, idx in enumerate(setup.groups):
        ids = [setup.clean[i] for i in idx]
        T = len(ids[0])
        step = max(1, batch // len(idx))
        targets = [setup.targets[i] for i in idx]
        with prefix.record(len(idx)), torch.inference_mode():
            clean[idx] = _read(model, setup, ids, idx, [], edits)[0]
        at = 0
        while at < len(order):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("attribution cancelled")
            start = starts[order[at]]
            end = at + 1
            while end < len(order) and end - at < step and starts[order[end]] == start:
                end += 1
            which = order[at:end]
            chunk = [rows[j] for j in which]
            at = end
            B = len(chunk)
            sess = _session(model, edits, B * len(idx), T)
            for s in sites:
                if not any(s in r for r in chunk):
                    continue
                mask = torch.zeros(B, widths[s], dtype=torch.bool, device=model.device)
                for b, r in enumerate(chunk):
                    if s in r:
                        mask[b, r[s]] = True
                if position is not None:
                    pm = torch.zeros(T, dtype=torch.bool, device=model.device)
                    pm[position] = True
                    mask = mask[:, None, :] & pm[None, :, None]
                sess.add(model.resolve(s), _Patch(corr.groups[g][s], mask), True)
            with prefix.resume(start, B), torch.inference_mode():
                logits = _run(model, ids * B, sess, _keep(setup, idx))
                m = metric_rows(logits, targets * B).double().cpu().numpy().reshape(B, len(idx))
            out[which] += (clean[idx][None, :] - m).sum(1)
            done += B
            if progress is not None:
                progress(done, total)
    return out / setup.n, clean


class _Units:
    """Neurons, or attention heads as blocks of ``d_head`` columns of ``hook_z``."""

    def __init__(self, model, sites, per: str):
        self.model, self.per = model, per
        if per == "head":
            from neurolens.engine.attention.heads import geometry
            self.g = geometry(model)
            self.n = {s: self.g.n_heads for s in sites}
        else:
            self.n = {s: model.site_width(s) for s in sites}

    def columns(self, unit: int) -> list[int]:
        if self.per == "neuron":
            return [unit]
        return list(range(unit * self.g.d_head, (unit + 1) * self.g.d_head))

    def reduce(self, e: np.ndarray) -> np.ndarray:
        """``[..., width]`` per-column effects -> ``[..., units]``."""
        if self.per == "neuron":
            return e
        return e.reshape(*e.shape[:-1], self.g.n_heads, self.g.d_head).sum(-1)

    def check(self, chosen: dict[str, list[int]], sites) -> None:
        word = self.per
        for s in chosen:
            if s not in sites:
                raise InputError(f"{word}s given for {s}, which is not among the sites")
            bad = [n for n in chosen[s] if not 0 <= n < self.n[s]]
            if not bad:
                continue
            if word == "head":
                from neurolens.engine.attention.heads import check_heads
                check_heads(self.model, s, bad)
            raise InputError(f"{s}: neuron {bad[0]} out of range (width {self.n[s]})")


def _position(setup: Setup, position: int | None) -> int | None:
    if position is None:
        return None
    lens = {len(s) for s in setup.clean}
    if len(lens) > 1:
        raise InputError("--position needs prompts of one token length (with their answer "
                         f"prefix); these have {sorted(lens)}")
    T = lens.pop()
    if not -T <= position < T:
        raise InputError(f"position {position} is outside the {T} tokens of the run")
    return position % T


def attribute(model, prompts, answer, contrast=None, *, corrupt=None, ablate: str | None = None,
              sites="blocks.*.mlp.hook_post", method: str = "attribution",
              neurons: dict[str, list[int]] | None = None, position: int | None = None,
              mean_prompts: list[str] | None = None, verify: int = 0, batch: int = 64,
              edits=None, per: str = "neuron", progress=None,
              cancel: CancelToken | None = None) -> Attribution:
    """Causal effect of every neuron of ``sites`` on the metric (see the module docstring).

    ``prompts``/``corrupt``: a string or a list (same token lengths pairwise); without
    ``corrupt``, ``ablate`` is ``"mean"`` (over ``mean_prompts``, default the prompts) or
    ``"zero"``. ``answer``/``contrast``: one string or one per prompt; with a contrast the metric
    is their logit difference, else the answer's log-probability. ``neurons``: for ``exact``,
    only these (default every neuron of the sites). ``position``: score that position only
    (ranks and exact patching), else positions are summed. ``verify``: patch the top-k of a
    gradient method exactly too. The result's ``corrupted`` metric is the corrupted prompts'
    run, or for an ablation the clean run with every neuron of the sites ablated.

    ``per="head"``: score attention heads instead of neurons; ``sites`` are
    ``blocks.L.attn.hook_z`` sites (e.g. ``"blocks.*.attn.hook_z"``), ``effects[site]`` is
    ``[n_heads]`` (query heads), ``per_prompt[site][i]`` ``[tokens, n_heads]``, ``neurons``
    lists heads, and ``as_edits`` writes ``prune_head`` ops. A head's effect is that of its whole
    ``d_head`` slice: patched at once (exact), or the sum of the slice's terms (gradient
    methods; exact for the linear approximation)."""
    if method not in METHODS:
        raise InputError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    if per not in UNITS:
        raise InputError(f"per: 'neuron' or 'head', got {per!r}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(corrupt, str):
        corrupt = [corrupt]
    if corrupt is not None and ablate is not None:
        raise InputError("give corrupted prompts or an ablation, not both")
    if corrupt is None:
        ablate = ablate or "mean"
        if ablate not in ABLATIONS:
            raise InputError(f"unknown ablation '{ablate}' (choose from mean, zero)")
    sites = (check_head_sites if per == "head" else check_neuron_sites)(model, sites)
    units = _Units(model, sites, per)
    setup = build_setup(model, prompts, answer, contrast, corrupt)
    pos = _position(setup, position)
    if edits is not None:
        model.check_edits(edits)
    corr = _Corrupted(model, setup, sites, ablate, mean_prompts, edits, prompts)
    if method == "exact":
        chosen = neurons or {s: list(range(units.n[s])) for s in sites}
        units.check(chosen, sites)
        keys = [(s, n) for s in chosen for n in chosen[s]]
        eff, clean = _exact_rows(model, setup, sites, corr,
                                 [{s: units.columns(n)} for s, n in keys], pos, batch, edits,
                                 progress, cancel)
        effects = {s: np.full(units.n[s], np.nan) for s in sites}
        for (s, n), e in zip(keys, eff):
            effects[s][n] = e
        per_prompt = None
    else:
        per_prompt, clean = _gradients(model, setup, sites, corr, method, edits)
        per_prompt = {s: [units.reduce(a) for a in v] for s, v in per_prompt.items()}
        effects = {s: (np.mean([a[pos] for a in per_prompt[s]], 0) if pos is not None
                       else np.mean([a.sum(0) for a in per_prompt[s]], 0)) for s in sites}
    res = Attribution(
        method=method, metric=setup.metric, metric_text=setup.describe(),
        corruption="prompts" if corrupt is not None else ablate, sites=sites,
        prompts=prompts, tokens=[model.token_strings(s) for s in setup.clean],
        clean=float(clean.mean()), corrupted=float(corr.metric.mean()), effects=effects,
        per_prompt=per_prompt, position=pos, model_name=model.name_or_path,
        fingerprint=model.fingerprint, unit=per)
    if verify and method != "exact":
        top = res.top(verify)
        rows = [{s: units.columns(n)} for s, n, _ in top]
        ex, _ = _exact_rows(model, setup, sites, corr, rows, pos, batch, edits, progress,
                            cancel)
        res.verified = [{"site": s, "neuron": n, **({"head": n} if per == "head" else {}),
                         "estimate": float(e), "exact": float(x)}
                        for (s, n, e), x in zip(top, ex)]
    return res


def patch_blocks(model, prompts, answer, contrast=None, *, blocks: list[tuple[str, list[int]]],
                 corrupt=None, ablate: str | None = None, position: int | None = None,
                 mean_prompts=None, batch: int = 64, edits=None) -> np.ndarray:
    """Exact patching of blocks of neurons: the effect of patching each block's neurons
    together (signed as in :func:`attribute`), one entry per block."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(corrupt, str):
        corrupt = [corrupt]
    if corrupt is None:
        ablate = ablate or "mean"
    sites = check_neuron_sites(model, list(dict.fromkeys(s for s, _ in blocks)))
    setup = build_setup(model, prompts, answer, contrast, corrupt)
    pos = _position(setup, position)
    corr = _Corrupted(model, setup, sites, ablate, mean_prompts, edits, prompts)
    return _exact_rows(model, setup, sites, corr, [{s: list(n)} for s, n in blocks], pos,
                       batch, edits)[0]


def metric(model, prompts, answer, contrast=None, edits=None) -> float:
    """The metric's mean over the prompts (with ``edits`` applied)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    setup = build_setup(model, prompts, answer, contrast)
    out = np.zeros(setup.n)
    for idx in setup.groups:
        out[idx] = _read(model, setup, [setup.clean[i] for i in idx], idx, [], edits)[0]
    return float(out.mean())
