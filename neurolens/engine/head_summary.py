"""Per-head summaries of a language model's attention, over chosen prompts.

For every layer x query head, per prompt (its real tokens; the first query is left out, since
it can only attend to itself):

- ``entropy``: mean entropy of the pattern rows (nats);
- ``distance``: mean attention distance, ``sum_k p[q, k] * |q - k|`` (tokens);
- ``prev``: mean share of attention to the previous token, ``p[q, q - 1]``;
- ``first``: mean share of attention to the first token, ``p[q, 0]``;
- ``out_norm``: mean L2 norm of the head's output (its ``d_head`` slice of
  ``blocks.{l}.attn.hook_z``) over the prompt's tokens;

and, on ``n`` sequences of ``L`` random tokens repeated twice (after the tokenizer's BOS where it
has one), ``induction``: the mean pattern weight from each second-half query ``q`` to the key
just after the earlier occurrence of its token, ``q - L + 1``.

Patterns are read with the model's own pattern capture (eager attention, switched on only for
the run), one prompt at a time, and reduced to per-head numbers inside the softmax tap: no
pattern is kept beyond the layer that produced it. :func:`head_detail` gives one prompt's
patterns of one layer and the heads' output norms per token (what the head view shows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from collections.abc import Iterable

import numpy as np
import torch

from neurolens.engine.attention import geometry, plan_of
from neurolens.engine.events import BatchDone, Cancelled, Failed, Finished, Started, drain
from neurolens.engine.hooks import CancelToken
from neurolens.errors import InputError
from neurolens.spec.sites import site_name

#: the summaries, in display order, with what they mean
METRICS = {
    "entropy": "mean entropy of the pattern rows (nats)",
    "distance": "mean attention distance (tokens)",
    "prev": "share of attention to the previous token",
    "first": "share of attention to the first token",
    "induction": "induction score (repeated random tokens)",
    "out_norm": "mean output norm (hook_z)",
}
#: the summaries measured on the chosen prompts (the induction score has its own sequences)
PROMPT_METRICS = ("entropy", "distance", "prev", "first", "out_norm")


def _t(p) -> torch.Tensor:
    return torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p).float()


def row_metrics(pattern) -> dict[str, np.ndarray]:
    """``entropy``, ``distance``, ``prev``, ``first`` per head of one prompt's pattern
    ``[heads, n, n]`` (queries 1..n-1; NaN where the prompt has one token)."""
    p = _t(pattern)
    h, n = p.shape[0], p.shape[-1]
    if n < 2:
        nan = np.full(h, np.nan, np.float32)
        return {k: nan.copy() for k in ("entropy", "distance", "prev", "first")}
    rows = p[:, 1:, :]                                        # queries 1..n-1
    q = torch.arange(1, n, device=p.device)[:, None]
    k = torch.arange(n, device=p.device)[None, :]
    i = torch.arange(n - 1, device=p.device)
    out = {"entropy": -torch.special.xlogy(rows, rows).sum(-1).mean(-1),
           "distance": (rows * (q - k).abs()).sum(-1).mean(-1),
           "prev": rows[:, i, i].mean(-1),                    # p[q, q - 1]
           "first": rows[:, :, 0].mean(-1)}
    return {name: v.double().cpu().numpy().astype(np.float32) for name, v in out.items()}


def induction_score(pattern, length: int, offset: int = 0) -> np.ndarray:
    """Per head: the mean weight from each query ``q`` of the second copy (positions
    ``offset + L .. offset + 2L - 1``) to key ``q - L + 1`` of a pattern ``[heads, T, T]``."""
    p = _t(pattern)
    L = int(length)
    if L < 2 or p.shape[-1] < offset + 2 * L:
        raise InputError(f"induction score: need a pattern of at least {offset + 2 * L} "
                         f"tokens (2 x {L} after {offset}), got {p.shape[-1]}")
    q = torch.arange(offset + L, offset + 2 * L, device=p.device)
    return p[:, q, q - L + 1].mean(-1).double().cpu().numpy().astype(np.float32)


def output_norms(z, n_heads: int) -> np.ndarray:
    """``[tokens, n_heads * d_head]`` (``hook_z``, head-major) -> per-token head norms
    ``[tokens, n_heads]``."""
    z = _t(z)
    return torch.linalg.vector_norm(z.reshape(z.shape[0], n_heads, -1), dim=-1).numpy()


def repeated_random_tokens(model, length: int, n: int, seed: int = 0) -> tuple[list, int]:
    """``n`` sequences of ``length`` random (non-special) tokens repeated twice, after the
    tokenizer's BOS where it has one; returns (sequences, offset of the first copy)."""
    if length < 2 or n < 1:
        raise InputError(f"induction: need a length >= 2 and at least one sequence, got "
                         f"length {length}, n {n}")
    tok = model.tokenizer
    vocab = int(model.hf.config.vocab_size)
    special: set[int] = set()
    bos = None
    if tok is not None:
        vocab = min(vocab, len(tok))
        special = set(tok.all_special_ids)
        bos = tok.bos_token_id
    pool = np.array([t for t in range(vocab) if t not in special])
    if len(pool) < 2:
        raise InputError("induction: the vocabulary has no ordinary tokens to sample")
    max_pos = getattr(model.hf.config, "max_position_embeddings", None)
    off = 0 if bos is None else 1
    if max_pos is not None and off + 2 * length > int(max_pos):
        raise InputError(f"induction: 2 x {length} tokens exceed the model's context "
                         f"({max_pos})")
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n):
        r = rng.choice(pool, size=length, replace=len(pool) < length).tolist()
        seqs.append(([bos] if bos is not None else []) + r + r)
    return seqs, off


@dataclass
class HeadSummary:
    """Per-head summaries: ``per_prompt[metric]`` is ``[prompts, layers, heads]`` (NaN where a
    prompt has one token), ``induction`` ``[layers, heads]``."""

    prompts: list
    set_names: list[str]
    per_prompt: dict[str, np.ndarray]
    induction: np.ndarray
    induction_tokens: list[list[int]] = field(default_factory=list)
    induction_len: int = 0
    induction_offset: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.induction.shape)

    def mean(self, metric: str, set_name: str | None = None) -> np.ndarray | None:
        """``[layers, heads]``: the mean over the prompts (of one set); None when the set has
        no prompt with a value."""
        if metric == "induction":
            return self.induction
        if metric not in self.per_prompt:
            raise InputError(f"unknown head summary '{metric}' (one of {', '.join(METRICS)})")
        v = self.per_prompt[metric]
        if set_name is not None:
            v = v[[i for i, s in enumerate(self.set_names) if s == set_name]]
        if not len(v) or np.all(np.isnan(v)):
            return None
        with warnings.catch_warnings():     # all-NaN columns (one-token prompts): NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(v, axis=0).astype(np.float32)

    def diff(self, metric: str, set_a: str, set_b: str) -> np.ndarray | None:
        """The set difference A - B of a per-prompt summary (None: not per prompt, or a set has
        no values)."""
        if metric not in self.per_prompt:
            return None
        a, b = self.mean(metric, set_a), self.mean(metric, set_b)
        return None if a is None or b is None else a - b


def _real(t: torch.Tensor, state, row: int) -> torch.Tensor:
    """The real (unpadded) positions of one batch row over ``t``'s last axis."""
    am = state.attention_mask
    n = t.shape[-1]
    if am is None:
        return torch.arange(n, device=t.device)
    return am[row, -n:].to(t.device).bool().nonzero()[:, 0]


class _PatternReader:
    """A softmax tap of one layer: reduces each prompt's pattern to per-head numbers."""

    def __init__(self, layer: int, fn, sink: dict):
        self.layer, self.fn, self.sink = layer, fn, sink

    def __call__(self, scores, pattern, state) -> None:
        if state.phase != "prefill":
            return
        for row in range(pattern.shape[0]):
            sel = _real(pattern, state, row)
            p = pattern[row].index_select(1, sel).index_select(2, sel).float()
            for name, v in self.fn(p).items():
                self.sink.setdefault(name, {})[(state.prompt_index[row], self.layer)] = v


class _NormReader:
    """A ``hook_z`` capture that keeps each prompt's mean head-output norm."""

    def __init__(self, layer: int, n_heads: int, sink: dict):
        self.layer, self.n_heads, self.sink = layer, n_heads, sink

    def __call__(self, x, state):
        if state.phase != "prefill":
            return None
        b, n = x.shape[0], x.shape[1]
        norms = torch.linalg.vector_norm(x.detach().float().reshape(b, n, self.n_heads, -1),
                                         dim=-1)                       # [b, n, heads]
        for row in range(b):
            sel = _real(norms.transpose(1, 2), state, row)
            v = norms[row].index_select(0, sel).mean(0).cpu().numpy()
            self.sink.setdefault("out_norm", {})[(state.prompt_index[row], self.layer)] = v
        return None


def _id_encode(rows):
    ids = [[int(t) for t in r] for r in rows]
    if len({len(r) for r in ids}) != 1:
        raise InputError("token-id prompts of one batch must have the same length")
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids),
                                                                         len(ids[0]),
                                                                         dtype=torch.long)}


def _pass(model, prompts, fn, *, norms: bool, edits, cancel, base: int, total: int,
          encode=None):
    """One forward per prompt with the pattern readers (and the hook_z norm readers); yields
    BatchDone (counted from ``base`` of ``total``), returns the sink
    ``{metric: {(prompt, layer): [heads]}}`` or None when cancelled."""
    from neurolens.engine.runner import forward_events
    g = geometry(model)
    sink: dict = {}
    ctx: dict = {"model": model}
    plan = plan_of(ctx)
    for layer in range(model.n_layers):
        plan.add_reader(layer, _PatternReader(layer, fn, sink))
    caps = ({site_name(layer, "attn.hook_z"): _NormReader(layer, g.n_heads, sink)
             for layer in range(model.n_layers)} if norms else None)
    factory = model.session_factory(edits, caps, ctx)
    for ev in forward_events(model, list(prompts), factory, 1, cancel, encode=encode):
        if isinstance(ev, BatchDone):
            yield BatchDone(ev.prompt_indices, base + ev.done, total)
        elif isinstance(ev, Cancelled):
            return None
        elif isinstance(ev, Failed):
            raise ev.error
    return sink


def _stack(sink: dict, names, n_prompts: int, n_layers: int, n_heads: int) -> dict:
    out = {}
    for name in names:
        a = np.full((n_prompts, n_layers, n_heads), np.nan, np.float32)
        for (i, layer), v in sink.get(name, {}).items():
            a[i, layer] = v
        out[name] = a
    return out


def head_summary_events(model, prompts: Iterable, set_names: Iterable[str] | None = None, *,
                        edits=None, induction_len: int = 20, induction_n: int = 4,
                        seed: int = 0, cancel: CancelToken | None = None):
    """Events of :func:`head_summary`: Started, BatchDone per prompt (the induction sequences
    after the prompts), then Finished(HeadSummary) | Cancelled | Failed."""
    cancel = cancel or CancelToken()
    try:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise InputError("no prompts given")
        sets = list(set_names) if set_names is not None else ["prompts"] * len(prompts)
        if len(sets) != len(prompts):
            raise InputError(f"{len(sets)} set names for {len(prompts)} prompts")
        g = geometry(model)
        seqs, off = repeated_random_tokens(model, induction_len, induction_n, seed)
        total = len(prompts) + len(seqs)
        yield Started(total, "prompts")
        sink = yield from _pass(model, prompts, row_metrics, norms=True, edits=edits,
                                cancel=cancel, base=0, total=total)
        if sink is None:
            yield Cancelled()
            return
        per = _stack(sink, PROMPT_METRICS, len(prompts), model.n_layers, g.n_heads)

        def induction(p):
            return {"induction": induction_score(p, induction_len, off)}
        isink = yield from _pass(model, seqs, induction, norms=False, edits=edits,
                                 cancel=cancel, base=len(prompts), total=total,
                                 encode=_id_encode)
        if isink is None:
            yield Cancelled()
            return
        ind = _stack(isink, ["induction"], len(seqs), model.n_layers, g.n_heads)["induction"]
        yield Finished(HeadSummary(prompts, sets, per, ind.mean(0), seqs, induction_len, off))
    except Exception as e:  # noqa: BLE001 - reported as the run's failure
        yield Failed(e)


def head_summary(model, prompts, set_names=None, *, progress=None, **kw) -> HeadSummary:
    """Per-head summaries of ``model`` over ``prompts`` (see the module docstring)."""
    return drain(head_summary_events(model, prompts, set_names, **kw), progress,
                 "head summary")


@dataclass
class HeadDetail:
    """One prompt at one layer: ``pattern`` ``[heads, queries, keys]``, the tokens, and
    ``out_norm`` ``[tokens, heads]`` (each head's output norm per token)."""

    prompt: str
    layer: int
    tokens: list[str]
    pattern: np.ndarray
    out_norm: np.ndarray


def head_detail(model, prompt: str, layer: int, edits=None, cancel=None) -> HeadDetail:
    """The patterns of one layer's heads for one prompt and their output norms per token."""
    if not 0 <= int(layer) < model.n_layers:
        raise InputError(f"layer {layer} out of range: this model has {model.n_layers} layers "
                         f"(0..{model.n_layers - 1})")
    g = geometry(model)
    cap = model.attention([prompt], site_name(layer, "attn.hook_pattern"), edits=edits,
                          batch_size=1, cancel=cancel)
    z = model.capture([prompt], site_name(layer, "attn.hook_z"), edits=edits, batch_size=1,
                      cancel=cancel)
    pat = cap[cap.sites[0]][0]
    return HeadDetail(prompt, int(layer), list(cap.tokens[0]), pat,
                      output_norms(z[z.sites[0]][0], g.n_heads))
