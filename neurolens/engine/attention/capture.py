"""Capture of attention patterns and scores, bounded: chosen layers and heads only, per prompt
the real (unpadded) query rows and keys, and during decoding one query row per step.

A prompt's pattern is ``[heads, queries, keys]`` (keys = every token of the sequence so far;
entries a query cannot see are 0 in the pattern and -inf in the scores); with ``rows="last"``
only the last query row of the prompt is kept (and the decoded rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable

import numpy as np
import torch

from neurolens.engine.attention.heads import attention_sites, check_heads, is_pattern_site
from neurolens.engine.attention.scope import plan_of, visible
from neurolens.engine.hooks import StopForward
from neurolens.errors import InputError
from neurolens.spec.sites import match_sites, parse_site

_KIND = {"attn.hook_pattern": "pattern", "attn.hook_attn_scores": "scores"}


@dataclass
class _Block:
    key_end: int             # real tokens seen (keys) after this block's last query
    rows: np.ndarray         # [heads, queries, keys]


class PatternRecorder:
    """Reader of one layer's softmax: keeps the chosen heads' rows per prompt."""

    def __init__(self, layer: int, kinds: list[str], heads: list[int] | None, rows: str):
        self.layer, self.kinds, self.heads, self.rows = layer, kinds, heads, rows
        self.blocks: dict[tuple[str, int], list[_Block]] = {}
        self._seen: dict[int, int] = {}          # prompt -> real tokens so far
        self.stop = False        # the last read of a forward: stop it (nothing after is used)

    def __call__(self, scores: torch.Tensor, pattern: torch.Tensor, state) -> None:
        b, _, q, k = pattern.shape
        if self.heads is not None:
            idx = torch.tensor(self.heads, device=pattern.device)
            scores, pattern = scores.index_select(1, idx), pattern.index_select(1, idx)
        am = state.attention_mask
        am = am.to(pattern.device).bool() if am is not None else \
            torch.ones(b, k, dtype=torch.bool, device=pattern.device)
        kval, qval = am[:, -k:], am[:, -q:]
        vis = visible(scores) if "scores" in self.kinds else None
        for row in range(b):
            if state.phase == "decode" and state.active is not None and not bool(
                    state.active[row]):
                continue
            i = state.prompt_index[row]
            qsel = qval[row].nonzero()[:, 0]
            if qsel.numel() == 0:
                continue
            if self.rows == "last":
                qsel = qsel[-1:]
            ksel = kval[row].nonzero()[:, 0]
            n_real = int(am[row].sum())
            whole_q, whole_k = qsel.numel() == q, ksel.numel() == k
            for kind in self.kinds:
                t = pattern if kind == "pattern" else scores
                a = t[row]                   # a view where every query and key is real
                if not whole_q:
                    a = a.index_select(1, qsel)
                if not whole_k:
                    a = a.index_select(2, ksel)
                a = a.float()
                if kind == "scores":
                    v = vis[row].index_select(1, qsel).index_select(2, ksel)
                    a = a.masked_fill(~v, float("-inf"))
                self.blocks.setdefault((kind, i), []).append(_Block(n_real, a.cpu().numpy()))
        if self.stop:
            raise StopForward

    def assemble(self, kind: str, prompt: int) -> np.ndarray:
        blocks = self.blocks.get((kind, prompt), [])
        if not blocks:
            return np.zeros((0, 0, 0), np.float32)
        T = max(bl.key_end for bl in blocks)
        if len(blocks) == 1 and blocks[0].rows.shape[2] == T:
            return blocks[0].rows            # one block covering every key: as it is
        h = blocks[0].rows.shape[0]
        nq = sum(bl.rows.shape[1] for bl in blocks)
        out = np.full((h, nq, T), 0.0 if kind == "pattern" else -np.inf, np.float32)
        r = 0
        for bl in blocks:
            _, qn, kn = bl.rows.shape
            out[:, r:r + qn, bl.key_end - kn:bl.key_end] = bl.rows
            r += qn
        return out


@dataclass
class AttentionCapture:
    """Captured patterns / scores: ``cap[site][prompt]`` is ``[heads, queries, keys]``."""

    prompts: list
    sites: list[str]
    heads: list[int]
    rows: str
    data: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tokens: list[list[str]] = field(default_factory=list)

    def __getitem__(self, site: str) -> list[np.ndarray]:
        return self.data[site]


def resolve_pattern_sites(model, sites) -> list[str]:
    if isinstance(sites, str):
        sites = [sites]
    avail = [s for s in attention_sites(model) if is_pattern_site(s)]
    if not avail:
        from neurolens.engine.attention.heads import geometry
        geometry(model)     # raises with the reason
    out: list[str] = []
    for p in sites:
        found = match_sites(p, avail)
        if not found:
            raise InputError(f"'{p}' is not an attention pattern or score site of this model "
                             f"(e.g. {avail[0]}; blocks.*.attn.hook_pattern for every layer)")
        out.extend(s for s in found if s not in out)
    return out


def capture_attention(model, prompts: str | Iterable, sites=("blocks.*.attn.hook_pattern",), *,
                      heads: Iterable[int] | None = None, rows: str = "all", edits=None,
                      max_new_tokens: int = 0, batch_size: int = 8, cancel=None,
                      progress=None) -> AttentionCapture:
    """Patterns (after the softmax) and scores (before it) of the chosen layers and heads."""
    from neurolens.engine.events import drain
    from neurolens.engine.runner import forward_events
    from neurolens.spec.run import GenerationParams

    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts given")
    if rows not in ("all", "last"):
        raise InputError(f"rows: 'all' or 'last', got {rows!r}")
    names = resolve_pattern_sites(model, sites)
    from neurolens.engine.attention.heads import geometry
    g = geometry(model)
    head_list = sorted(set(int(h) for h in heads)) if heads is not None else None
    if head_list is not None:
        check_heads(model, names[0], head_list)
    by_layer: dict[int, list[str]] = {}
    for s in names:
        ps = parse_site(s)
        by_layer.setdefault(ps.layer, []).append(_KIND[ps.kind])
    ctx: dict = {"model": model}
    plan = plan_of(ctx)
    recs = {}
    for layer, kinds in by_layer.items():
        recs[layer] = PatternRecorder(layer, kinds, head_list, rows)
        plan.add_reader(layer, recs[layer])
    tokens: dict[int, list[str]] = {}
    if max_new_tokens <= 0 and model._modules_run_once():
        recs[max(recs)].stop = True      # no later layer, MLP or LM head is computed

    def on_prompt(i, ids):
        tokens[i] = model.token_strings(ids)
    if max_new_tokens > 0:
        params = GenerationParams(max_new_tokens=max_new_tokens, batch_size=batch_size)
        outs = drain(model.generate_events(prompts, edits=edits, params=params, cancel=cancel,
                                           ctx=ctx), progress, "attention capture")
        encode = model._id_encoder(prompts) or model.encode
        for i, o in enumerate(outs):
            enc = encode([prompts[i]])
            ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
            tokens[i] = model.token_strings(ids) + list(o.tokens)
    else:
        factory = model.session_factory(edits, None, ctx)
        drain(forward_events(model, prompts, factory, batch_size, cancel, on_prompt,
                             encode=model._id_encoder(prompts)), progress, "attention capture")
    data = {}
    for s in names:
        ps = parse_site(s)
        data[s] = [recs[ps.layer].assemble(_KIND[ps.kind], i) for i in range(len(prompts))]
    return AttentionCapture(prompts, names, head_list if head_list is not None
                            else list(range(g.n_heads)), rows, data,
                            [tokens.get(i, []) for i in range(len(prompts))])
