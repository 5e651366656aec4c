"""The metric that causal neuron scores explain, and the token sequences it is measured on.

A metric is either the **logit difference** between an answer and a contrast answer at the first
position where their tokenizations differ, or the **log-probability** of an answer continuation
summed over its tokens; averaged over a prompt set. Answers are tokenized on their own (no
special tokens) and teacher-forced: with answer ``85`` against ``84`` (a tokenizer that splits
digits) the run reads ``prompt + "8"`` and the metric is ``logit("5") - logit("4")`` at its last
position; ``85`` against ``75`` differ at their first token, so the run reads the prompt alone.

Every prompt's sequence is its own tokens plus that shared prefix, run unpadded: prompts are
grouped by length (at most ``GROUP`` to a batch), so no position is ever a pad.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurolens.errors import InputError
from neurolens.spec.sites import parse_site

#: site kinds whose last axis is neurons (the others are residual-stream directions)
NEURON_KINDS = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post")
#: the site kind scored per attention head (``per="head"``)
HEAD_KIND = "attn.hook_z"
#: most prompts in one batch (the gradient run keeps its graph)
GROUP = 32


@dataclass
class Target:
    """What the metric reads after one prompt: the token ids appended to it (teacher-forced),
    and the scored positions, counted from the sequence's end."""

    forced: list[int]          # answer tokens appended to the prompt
    good: list[int]            # scored token per read position (answer)
    bad: list[int] | None      # contrast token (logit difference) or None (log-probability)


@dataclass
class Setup:
    """Clean (and corrupted) token sequences of one attribution, grouped by length."""

    metric: str                          # "logit_diff" | "logprob"
    answers: list[str]
    contrasts: list[str] | None
    clean: list[list[int]]               # full sequence per prompt
    corrupt: list[list[int]] | None      # same lengths, or None (ablation)
    targets: list[Target]
    groups: list[list[int]]              # prompt indices per equal-length group

    @property
    def n(self) -> int:
        return len(self.clean)

    def describe(self) -> str:
        a = repr(self.answers[0]) if len(set(self.answers)) == 1 else "answer"
        if self.metric == "logit_diff":
            c = repr(self.contrasts[0]) if len(set(self.contrasts)) == 1 else "contrast"
            return f"logit({a}) - logit({c})"
        return f"log p({a})"


def _encode(tok, text: str) -> list[int]:
    """An answer's tokens: no special tokens (it continues the prompt)."""
    return list(tok(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tok, text: str) -> list[int]:
    """A prompt's tokens as the engine's other runs encode them (a BOS where the tokenizer
    adds one)."""
    return list(tok(text)["input_ids"])


def _per_prompt(value, n: int, what: str) -> list[str] | None:
    if value is None:
        return None
    vals = [value] * n if isinstance(value, str) else list(value)
    if len(vals) != n:
        raise InputError(f"{len(vals)} {what}s for {n} prompts")
    return vals


def target_for(tok, answer: str, contrast: str | None) -> Target:
    """The teacher-forced prefix and the scored tokens of one answer (and contrast)."""
    a = _encode(tok, answer)
    if not a:
        raise InputError(f"the answer {answer!r} tokenizes to nothing: give some text")
    if contrast is None:
        return Target(forced=a[:-1], good=a, bad=None)
    c = _encode(tok, contrast)
    if not c:
        raise InputError(f"the contrast answer {contrast!r} tokenizes to nothing: give some text")
    k = next((i for i, (x, y) in enumerate(zip(a, c)) if x != y), None)
    if k is None:
        raise InputError(f"the answer {answer!r} and the contrast {contrast!r} tokenize alike "
                         "up to the end of the shorter one: no position tells them apart")
    return Target(forced=a[:k], good=[a[k]], bad=[c[k]])


def _differ(a: list[int], b: list[int]) -> str:
    pos = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if not pos:
        return f"it starts with the whole clean prompt (first extra token at {min(len(a), len(b))})"
    shown = ", ".join(map(str, pos[:6])) + (", ..." if len(pos) > 6 else "")
    return f"they differ at token position(s) {shown}"


def build_setup(model, prompts: list[str], answer, contrast=None,
                corrupt: list[str] | None = None) -> Setup:
    """Tokenize prompts, answers and corrupted prompts; check lengths line up."""
    tok = model.tokenizer
    if tok is None:
        raise InputError("attribution needs a model with a tokenizer")
    if not getattr(model, "causal", True):
        raise InputError(f"{model.model_type} is an encoder: attribution needs a causal LM")
    if not prompts:
        raise InputError("no prompts given")
    n = len(prompts)
    answers = _per_prompt(answer, n, "answer")
    if answers is None:
        raise InputError("no answer given: the metric needs the answer the prompt should get")
    contrasts = _per_prompt(contrast, n, "contrast answer")
    targets = [target_for(tok, a, contrasts[i] if contrasts else None)
               for i, a in enumerate(answers)]
    ids = [encode_prompt(tok, p) for p in prompts]
    for i, p in enumerate(ids):
        if not p:
            raise InputError(f"prompt {i + 1} is empty: type some text first")
    cor = None
    if corrupt is not None:
        if len(corrupt) != n:
            raise InputError(f"{len(corrupt)} corrupted prompts for {n} clean prompts")
        cor = [encode_prompt(tok, p) for p in corrupt]
        for i, (a, b) in enumerate(zip(ids, cor)):
            if len(a) != len(b):
                which = f" {i + 1}" if n > 1 else ""
                raise InputError(
                    f"corrupted prompt{which} has {len(b)} tokens, the clean one {len(a)} "
                    f"({_differ(a, b)}); positions must line up: use a corrupted prompt of "
                    "the same token length, or ablate instead (mean or zero)")
        cor = [b + t.forced for b, t in zip(cor, targets)]
    clean = [a + t.forced for a, t in zip(ids, targets)]
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(clean):
        by_len.setdefault(len(s), []).append(i)
    groups = [g[i:i + GROUP] for g in by_len.values() for i in range(0, len(g), GROUP)]
    return Setup("logit_diff" if contrasts else "logprob", answers, contrasts, clean, cor,
                 targets, groups)


def check_neuron_sites(model, patterns) -> list[str]:
    """Concrete sites of ``patterns``; each must be a neuron site of the FFN."""
    sites = model.resolve_sites(patterns)
    for s in sites:
        p = parse_site(s)
        if p is not None and p.kind == HEAD_KIND:
            raise InputError(f"'{s}' holds attention heads: score them per head (per='head', "
                             "CLI --per head)")
        if p is None or p.kind not in NEURON_KINDS:
            raise InputError(f"'{s}' is not a neuron site: attribution scores FFN neurons "
                             f"(blocks.L.{', blocks.L.'.join(NEURON_KINDS)}) or attention "
                             f"heads (blocks.L.{HEAD_KIND} with per='head')")
    return sites


def check_head_sites(model, patterns) -> list[str]:
    """Concrete sites of ``patterns`` for per-head scores; each must be a
    ``blocks.L.attn.hook_z`` site (the heads' outputs)."""
    sites = model.resolve_sites(patterns)
    for s in sites:
        p = parse_site(s)
        if p is None or p.kind != HEAD_KIND:
            raise InputError(f"'{s}' has no attention heads: per-head scores read "
                             f"blocks.L.{HEAD_KIND} (e.g. blocks.*.{HEAD_KIND})")
    return sites


def metric_rows(logits: torch.Tensor, targets: list[Target]) -> torch.Tensor:
    """The metric of each row of ``logits`` [rows, seq, vocab] (row r scored by
    ``targets[r]``), in the logits' float precision (float64 stays float64)."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    out = []
    for r, t in enumerate(targets):
        k = len(t.good)
        rows = logits[r, logits.shape[1] - k:]                 # positions that predict them
        good = torch.tensor(t.good, device=logits.device)
        if t.bad is None:
            lp = torch.log_softmax(rows, -1)
            out.append(lp[torch.arange(k, device=logits.device), good].sum())
        else:
            out.append(rows[-1, t.good[0]] - rows[-1, t.bad[0]])
    return torch.stack(out)


def forward_logits(model, ids: list[list[int]], session=None) -> torch.Tensor:
    """One unpadded forward of equal-length rows (inside ``session`` when given)."""
    x = torch.tensor(ids, dtype=torch.long, device=model.device)
    if session is None:
        return model.hf(input_ids=x, use_cache=False).logits
    with session:
        return model.hf(input_ids=x, use_cache=False).logits
