"""Runs as generators of events, with a cancel point at every batch and every token.

``generate_events`` drives batched, left-padded generation with a KV cache one token at a time;
``forward_events`` runs plain forwards (capture). Both own one :class:`HookSession` per batch,
so hooks are gone after every batch, whether it finished, was cancelled or failed (also when the
consumer simply stops iterating: closing the generator runs the ``finally`` blocks).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from neurolens.engine.events import (BatchDone, Cancelled, Failed, Finished, PromptProcessed,
                                     Started, TokenAppended)
from neurolens.engine.hooks import CancelToken, RunState, StopForward
from neurolens.spec.run import GenerationParams


@dataclass
class GenerationOutput:
    prompt: str
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"       # "length" | "eos" | "stop" | "cancelled" | "abstain"
    prompt_tokens: list[str] = field(default_factory=list)

    @property
    def abstained(self) -> bool:
        return self.finish_reason == "abstain"

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "output": self.text, "tokens": self.tokens,
                "logprobs": [round(float(v), 6) for v in self.logprobs],
                "finish_reason": self.finish_reason}


_PARAMS_CACHE: dict[type, frozenset] = {}


def _params(model) -> frozenset:
    """Names of the model's forward() arguments (cached per class: inspect is slow)."""
    key = type(model)
    got = _PARAMS_CACHE.get(key)
    if got is None:
        try:
            got = frozenset(inspect.signature(model.forward).parameters)
        except (TypeError, ValueError):
            got = frozenset()
        _PARAMS_CACHE[key] = got
    return got


def accepts_position_ids(model) -> bool:
    return "position_ids" in _params(model)


def cache_arg(model) -> str:
    """Name of the KV-cache argument (transformers 5.x renamed past_key_values to cache)."""
    return "cache" if "cache" in _params(model) else "past_key_values"


def out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def _sample(logits: torch.Tensor, p: GenerationParams, gen: torch.Generator) -> torch.Tensor:
    if not p.do_sample:
        return logits.argmax(-1)
    logits = logits.float() / max(p.temperature, 1e-6)
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        srt, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(srt, -1)
        cut = probs.cumsum(-1) - probs > p.top_p
        srt = srt.masked_fill(cut, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, srt)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


class _NoText:
    """Stands in for the tokenizer of a model that has none (random models, ids only)."""

    eos_token_id = None

    def decode(self, ids, skip_special_tokens=False) -> str:
        return ""

    def encode(self, text, add_special_tokens=False) -> list[int]:
        return []


def _abstain(state: RunState, outs: list, active: torch.Tensor, tok) -> None:
    """Rows flagged by a gate op since the last check give the refusal text and stop."""
    flags = state.extra.get("abstain")
    if flags is None:
        return
    refusal = state.extra.get("refusal", "")
    for row, hit in enumerate(flags.tolist()):
        if hit and bool(active[row]):
            o = outs[row]
            o.finish_reason = "abstain"
            o.token_ids = tok.encode(refusal, add_special_tokens=False) if refusal else []
            o.tokens = [tok.decode([t]) for t in o.token_ids]
            o.logprobs = [0.0] * len(o.token_ids)
            active[row] = False


def generate_events(lm, prompts: list, session_factory, params: GenerationParams,
                    cancel: CancelToken | None = None, on_prompt=None, encode=None):
    """Yield events while generating for every prompt; the last event is Finished, Cancelled or
    Failed. ``session_factory(state) -> HookSession`` builds the hooks (edits + captures).
    ``encode(batch)`` defaults to the model's tokenizer; pass one to feed token-id lists (a
    model without a tokenizer then generates ids; its texts are empty)."""
    cancel = cancel or CancelToken()
    encode = encode or lm.encode
    tok = lm.tokenizer or _NoText()
    outputs: list[GenerationOutput | None] = [None] * len(prompts)
    done = 0
    use_pos = accepts_position_ids(lm.hf)
    cache_name = cache_arg(lm.hf)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _params(lm.hf) else {}
    eos = set()
    if tok.eos_token_id is not None:
        eos.add(int(tok.eos_token_id))
    gen_eos = getattr(getattr(lm.hf, "generation_config", None), "eos_token_id", None)
    if params.ignore_eos:
        eos, gen_eos = set(), None
    if isinstance(gen_eos, int):
        eos.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        eos.update(int(e) for e in gen_eos)
    yield Started(len(prompts), "prompts")
    try:
        for start in range(0, len(prompts), params.batch_size):
            idx = list(range(start, min(len(prompts), start + params.batch_size)))
            if cancel.cancelled:
                yield Cancelled([o for o in outputs if o is not None])
                return
            enc = encode([prompts[i] for i in idx])
            ids, mask = enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device)
            b, L = ids.shape
            plen = mask.sum(1)
            state = RunState(batch=b, seq=L, offset=0, attention_mask=mask, pad=L - plen,
                             prompt_len=plen, prompt_index=idx, phase="prefill",
                             active=torch.ones(b, dtype=torch.bool))
            if on_prompt is not None:
                for row, i in enumerate(idx):
                    on_prompt(i, enc["input_ids"][row][mask[row].bool().cpu()].tolist())
            gen = torch.Generator().manual_seed(int(params.seed) + start)
            outs = [GenerationOutput(prompt=prompts[i]) for i in idx]
            new_text = ["" for _ in idx]
            stops = [tuple(params.stop) + tuple(params.row_stop[i] if params.row_stop else ())
                     for i in idx]
            # inference mode only around forwards: it is thread-local and must not leak into
            # the consumer's code while this generator is suspended at a yield
            with session_factory(state):
                kw = {"attention_mask": mask, "use_cache": True, **keep}
                if use_pos:
                    kw["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0)
                with torch.inference_mode():
                    out = lm.hf(input_ids=ids, **kw)
                done += len(idx)
                active = torch.ones(b, dtype=torch.bool, device=ids.device)
                _abstain(state, outs, active, tok)
                yield PromptProcessed(idx, done, len(prompts))
                next_pos = plen.clone()
                for step in range(params.max_new_tokens):
                    if cancel.cancelled:
                        for o in outs:
                            o.finish_reason = "cancelled"
                            o.text = tok.decode(o.token_ids, skip_special_tokens=True)
                        for row, i in enumerate(idx):
                            outputs[i] = outs[row]
                        yield Cancelled([o for o in outputs if o is not None])
                        return
                    logits = out.logits[:, -1, :]
                    nxt = _sample(logits, params, gen)
                    logp = torch.log_softmax(logits.float(), -1).gather(-1, nxt[:, None])[:, 0]
                    nxt_l, logp_l, act_l = nxt.tolist(), logp.tolist(), active.tolist()
                    token_ids: list[int | None] = []
                    texts: list[str | None] = []
                    for row in range(b):
                        if not act_l[row] or outs[row].finish_reason == "abstain":
                            token_ids.append(None)
                            texts.append(None)
                            continue
                        t = nxt_l[row]
                        piece = tok.decode([t], skip_special_tokens=False)
                        o = outs[row]
                        token_ids.append(t)
                        texts.append(piece)
                        if t in eos:
                            o.finish_reason = "eos"
                            active[row] = False
                            continue
                        o.token_ids.append(t)
                        o.tokens.append(piece)
                        o.logprobs.append(logp_l[row])
                        new_text[row] += piece
                        if stops[row] and any(s in new_text[row] for s in stops[row]):
                            o.finish_reason = "stop"
                            active[row] = False
                    yield TokenAppended(step, idx, token_ids, texts)
                    if not bool(active.any()) or step == params.max_new_tokens - 1:
                        break
                    pad_id = lm.pad_id
                    feed = torch.where(active, nxt, torch.full_like(nxt, pad_id))
                    mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype,
                                                       device=mask.device)], 1)
                    state.offset += state.seq
                    state.seq = 1
                    state.phase = "decode"
                    state.attention_mask = mask
                    state.active = active.cpu().clone()
                    kw = {"attention_mask": mask, "use_cache": True, **keep,
                          cache_name: out_cache(out)}
                    if use_pos:
                        kw["position_ids"] = next_pos[:, None]
                    next_pos = next_pos + 1
                    with torch.inference_mode():
                        out = lm.hf(input_ids=feed[:, None], **kw)
                    _abstain(state, outs, active, tok)
            for row, i in enumerate(idx):
                o = outs[row]
                o.text = tok.decode(o.token_ids, skip_special_tokens=True)
                outputs[i] = o
        yield Finished(outputs)
    except Exception as e:  # noqa: BLE001 - reported to the consumer as an event
        yield Failed(e)


def forward_events(lm, prompts: list, session_factory, batch_size: int = 8,
                   cancel: CancelToken | None = None, on_prompt=None, logits_sink=None,
                   encode=None, state_init=None, stop_early: bool = False):
    """Plain forwards over prompts in batches (capture). Yields BatchDone, then Finished([]).

    ``stop_early`` (no ``logits_sink``): each forward stops once every hook that captures or
    reports has run; only for models that run each module once per forward
    (``LanguageModel._modules_run_once``).

    ``encode(batch) -> {"input_ids", "attention_mask"}`` defaults to the model's tokenizer;
    pass one to feed token-id lists."""
    cancel = cancel or CancelToken()
    encode = encode or lm.encode
    use_pos = accepts_position_ids(lm.hf)
    done = 0
    yield Started(len(prompts), "prompts")
    try:
        for start in range(0, len(prompts), batch_size):
            if cancel.cancelled:
                yield Cancelled([])
                return
            idx = list(range(start, min(len(prompts), start + batch_size)))
            enc = encode([prompts[i] for i in idx])
            ids, mask = enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device)
            b, L = ids.shape
            plen = mask.sum(1)
            state = RunState(batch=b, seq=L, offset=0, attention_mask=mask, pad=L - plen,
                             prompt_len=plen, prompt_index=idx, phase="prefill")
            if state_init is not None:
                state_init(state, idx)
            if on_prompt is not None:
                for row, i in enumerate(idx):
                    on_prompt(i, enc["input_ids"][row][mask[row].bool().cpu()].tolist())
            sess = session_factory(state)
            with sess, torch.inference_mode():
                # without padding the model's defaults are the same mask and positions, and
                # leaving them out keeps the causal-attention fast path (no mask built from
                # explicit position ids)
                padded = bool((mask == 0).any())
                kw = {"attention_mask": mask} if padded or not lm.causal else {}
                if lm.causal:
                    kw["use_cache"] = False
                if use_pos and lm.causal and padded:
                    kw["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0)
                reads = sess.read_hooks() if stop_early and logits_sink is None else set()
                if reads:   # no logits needed: run only up to the last site that reads
                    state.pending_reads = reads
                try:
                    out = lm.hf(input_ids=ids, **kw)
                except StopForward:
                    out = None
                if logits_sink is not None:
                    lg = out.logits
                    for row, i in enumerate(idx):
                        logits_sink(i, lg[row][mask[row].bool()].float().cpu().numpy())
            done += len(idx)
            yield BatchDone(idx, done, len(prompts), state.extra)
        yield Finished([])
    except Exception as e:  # noqa: BLE001
        yield Failed(e)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    if len(a) != len(b):
        return min(len(a), len(b))
    return None


def logsoftmax_np(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
