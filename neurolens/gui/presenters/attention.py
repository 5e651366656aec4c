"""The Attention tab's data, Qt-free: which prompts the head summaries take, the layer x head
grid of a chosen summary (its mean, or the set difference A - B as the neuron maps show it),
its colour scale and cell texts, one head's query x key pattern with its token labels and its
output norm per token, the head picked for a first look, head edits from selected heads, and the
per-head attribution (the Attribute form's answer, contrast and corruption) as a diverging
layer x head map of signed effects."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from neurolens.engine.head_summary import METRICS, PROMPT_METRICS
from neurolens.spec.head_edits import PruneHead, ScaleHead
from neurolens.spec.sites import site_name

#: the summary combo's entries (metric key, text), in display order
LABELS = {"entropy": "entropy (nats)", "distance": "attention distance (tokens)",
          "prev": "previous-token share", "first": "first-token share",
          "induction": "induction score", "out_norm": "output norm",
          "attribution": "attribution (signed effect)"}
#: the grid entry that is not a head summary but an attribution of the Attribute form's answer
ATTRIBUTION = "attribution"
assert set(LABELS) == set(METRICS) | {ATTRIBUTION}
#: the attribution methods offered for heads: engine method -> label
HEAD_METHODS = {"attribution": "attribution patching", "exact": "exact patching"}
HEAD_SITES = "blocks.*.attn.hook_z"
#: grids of at most this many cells show each cell's value as text
TEXT_CELLS = 400
#: token labels are cut to this many characters
TOKEN_CHARS = 12


@dataclass
class GridChoice:
    """The tab's choices for the grid."""

    metric: str = "induction"
    diff: bool = False              # the set difference A - B (else the mean)
    set_a: str = ""
    set_b: str = ""


@dataclass
class GridView:
    """What the grid draws: ``matrix`` [layers, heads] (None: nothing, say ``message``)."""

    matrix: np.ndarray | None
    levels: tuple[float, float] = (0.0, 1.0)
    diverging: bool = False
    title: str = ""
    message: str = ""


def summary_prompts(rows, typed: str, typed_set: str) -> tuple[list[str], list[str]]:
    """The prompts the head summaries take: the typed prompt (in its set) first, then the
    prompt list's rows with their sets; each prompt once."""
    prompts, sets = [], []
    if typed.strip():
        prompts.append(typed)
        sets.append(typed_set.strip() or "typed")
    for s, p in rows:
        if p not in prompts:
            prompts.append(p)
            sets.append(s)
    return prompts, sets


def set_choices(set_names) -> list[str]:
    return list(dict.fromkeys(set_names))


def _levels(m: np.ndarray, diverging: bool) -> tuple[float, float]:
    finite = m[np.isfinite(m)]
    if not finite.size:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    if diverging:
        amp = max(float(np.abs(finite).max()), 1e-6)
        return (-amp, amp)
    lo, hi = min(0.0, float(finite.min())), float(finite.max())
    return (lo, hi if hi > lo else lo + 1e-6)


def head_request(req, method: str):
    """The Attribute form's request (its prompts, answer, contrast, corruption) turned into a
    per-head one: every layer's ``hook_z``, ``method`` ("attribution" | "exact")."""
    if method not in HEAD_METHODS:
        raise ValueError(f"head attribution: method 'attribution' or 'exact', got {method!r}")
    return replace(req, sites=HEAD_SITES, method=method)


def attribution_view(res, diff: bool = False) -> GridView:
    """The layer x head map of an attribution's signed effects (clean minus patched metric),
    on symmetric levels."""
    if diff:
        return GridView(None, message="attribution: one answer's effects, not per prompt set: "
                                      "no set difference")
    if res is None:
        return GridView(None, message="press Attribute heads: the answer, contrast and "
                                      "corruption come from the Attribute tab")
    m = np.asarray(res.matrix(), np.float32)
    return GridView(m, _levels(m, True), True, f"effect on {res.metric_text}")


def attribution_text(res, seconds: float) -> str:
    """The info line under the grid for an attribution."""
    how = HEAD_METHODS.get(res.method, res.method)
    corr = "corrupted prompt" if res.corruption == "prompts" else f"{res.corruption} ablation"
    return (f"attribution per head ({how}, {corr}): {res.metric_text}, clean {res.clean:.4f}, "
            f"corrupted {res.corrupted:.4f}; {seconds:.1f} s")


def showcase_attributed(res) -> tuple[int, int]:
    """The head with the largest absolute effect."""
    m = np.nan_to_num(np.abs(res.matrix()), nan=-np.inf)
    layer, head = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(layer), int(head)


def grid_view(summary, choice: GridChoice, attribution=None) -> GridView:
    """The layer x head grid of the chosen summary, or its set difference A - B (the
    attribution entry: ``attribution``'s effects)."""
    if choice.metric == ATTRIBUTION:
        return attribution_view(attribution, choice.diff)
    if summary is None:
        return GridView(None, message="press Compute to summarise every head")
    label = LABELS[choice.metric]
    if not choice.diff:
        m = summary.mean(choice.metric)
        if m is None:
            return GridView(None, message=f"{label}: no prompt has two tokens or more")
        where = (f"{len(summary.induction_tokens)} × {summary.induction_len} tokens, twice"
                 if choice.metric == "induction" else f"{len(summary.prompts)} prompts")
        return GridView(m, _levels(m, False), False, f"{label} ({where})")
    if choice.metric not in PROMPT_METRICS:
        return GridView(None, message=f"{label}: measured on its own random sequences, not "
                                      "per prompt set: no set difference")
    a, b = choice.set_a, choice.set_b
    if not a or not b or a == b:
        return GridView(None, message="set difference: choose two different sets A and B")
    m = summary.diff(choice.metric, a, b)
    if m is None:
        return GridView(None, message=f"set difference: '{a}' or '{b}' has no prompt with "
                                      "two tokens or more")
    return GridView(m, _levels(m, True), True, f"{label}: {a} − {b}")


def cell_texts(m: np.ndarray) -> list[list[str]] | None:
    """Each cell's value as short text (None: too many cells to label)."""
    if m.size > TEXT_CELLS:
        return None
    return [["" if not np.isfinite(v) else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
             for v in row] for row in m]


def token_label(t: str) -> str:
    """A token as an axis label: spaces as ·, visible line breaks, cut to TOKEN_CHARS."""
    t = t.replace("\n", "⏎").replace("\t", "⇥")
    if not t.strip():
        t = "·" * len(t) if t else "∅"
    elif t.startswith(" "):
        t = "·" + t[1:]
    return t if len(t) <= TOKEN_CHARS else t[:TOKEN_CHARS - 1] + "…"


def head_label(layer: int, head: int) -> str:
    return f"L{layer}.H{head}"


@dataclass
class HeadView:
    """One head on one prompt: its pattern [queries, keys], token labels, output norms."""

    pattern: np.ndarray
    labels: list[str]
    out_norm: np.ndarray
    levels: tuple[float, float]
    title: str


def head_view(detail, head: int) -> HeadView:
    """The head's query x key pattern with the prompt's tokens, and its output norm per
    token. The colour scale goes from 0 to the largest weight below the first row (whose one
    weight is always 1)."""
    p = np.asarray(detail.pattern[head], np.float32)
    rest = p[1:] if len(p) > 1 else p
    hi = float(rest.max()) if rest.size else 1.0
    return HeadView(p, [token_label(t) for t in detail.tokens],
                    np.asarray(detail.out_norm[:, head], np.float32), (0.0, max(hi, 1e-6)),
                    f"{head_label(detail.layer, head)} pattern (query × key)")


def pattern_cell_text(labels: list[str], pattern: np.ndarray, q: int, k: int) -> str:
    """The hover read-out of one pattern cell ("" outside the pattern)."""
    if not (0 <= q < pattern.shape[0] and 0 <= k < pattern.shape[1]):
        return ""
    tq, tk = (labels[i] if i < len(labels) else "?" for i in (q, k))
    return f"query {q} “{tq}” → key {k} “{tk}”: weight {float(pattern[q, k]):.3f}"


def showcase_head(summary) -> tuple[int, int]:
    """The head to open first: the strongest induction score."""
    m = np.nan_to_num(summary.induction, nan=-np.inf)
    layer, head = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(layer), int(head)


def head_ops(heads, op: str, factor: float = 0.0) -> list:
    """Edits for selected heads ``[(layer, head), ...]``: one prune / scale op per layer."""
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        if h not in by_layer.setdefault(int(layer), []):
            by_layer[int(layer)].append(int(h))
    out = []
    for layer in sorted(by_layer):
        site = site_name(layer, "attn.hook_z")
        hs = sorted(by_layer[layer])
        out.append(PruneHead(site, hs) if op == "prune" else ScaleHead(site, hs, factor=factor))
    return out


def selection_text(heads) -> str:
    if not heads:
        return "no head selected (click a cell; shift-click for more)"
    return "selected: " + ", ".join(head_label(*h) for h in heads)
