"""The result of an attribution: signed effects per site, rankings, and its files (a prune edit
set of the top neurons, a capture-format safetensors file of the effect arrays)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurolens.errors import InputError
from neurolens.spec.edits import EditSet, ModelRef, Prune
from neurolens.spec.sites import neuron_label, parse_site


def unit_label(site: str, index: int, unit: str = "neuron", with_kind: bool = False) -> str:
    """``L3.N17`` for a neuron, ``L3.H1`` for an attention head."""
    if unit == "head":
        s = parse_site(site)
        return f"L{s.layer}.H{index}" if s is not None else f"{site}[H{index}]"
    return neuron_label(site, index, with_kind=with_kind)


@dataclass
class Attribution:
    """``effects[site]``: ``[width]`` signed effect of each neuron on the mean metric (summed
    over positions, or at ``position``); ``per_prompt[site][i]``: ``[tokens, width]`` per
    position for prompt i (gradient methods; None for exact patching). ``unit``: ``"neuron"``,
    or ``"head"`` (``hook_z`` sites scored per attention head: ``width`` is the number of query
    heads, the indices are heads, :meth:`matrix` is layer x head)."""

    method: str
    metric: str                    # "logit_diff" | "logprob"
    metric_text: str
    corruption: str                # "prompts" | "mean" | "zero"
    sites: list[str]
    prompts: list[str]
    tokens: list[list[str]]        # each run's tokens (prompt + teacher-forced answer prefix)
    clean: float
    corrupted: float
    effects: dict[str, np.ndarray]
    per_prompt: dict[str, list[np.ndarray]] | None = None
    position: int | None = None
    model_name: str = ""
    fingerprint: str = ""
    verified: list[dict] = field(default_factory=list)
    unit: str = "neuron"

    def ranking(self) -> list[tuple[str, int, float]]:
        """Every scored neuron (head) as ``(site, index, effect)``, largest |effect| first."""
        out = [(s, int(n), float(e)) for s in self.sites for n, e in enumerate(self.effects[s])
               if np.isfinite(e)]
        out.sort(key=lambda t: -abs(t[2]))
        return out

    def top(self, k: int) -> list[tuple[str, int, float]]:
        return self.ranking()[:max(0, k)]

    def matrix(self) -> np.ndarray:
        """Layer x neuron (one row per site, in the sites' order; equal widths)."""
        widths = {len(self.effects[s]) for s in self.sites}
        if len(widths) != 1:
            raise InputError("the sites have different widths: no layer x neuron matrix")
        return np.stack([self.effects[s] for s in self.sites])

    def per_token(self, site: str, prompt: int = 0) -> np.ndarray:
        """Token x neuron effects of one prompt at ``site`` (gradient methods)."""
        if self.per_prompt is None:
            raise InputError("exact patching scores whole neurons; per-token effects come "
                             "from the attribution and gradxact methods")
        return self.per_prompt[site][prompt]

    def as_edits(self, k: int) -> EditSet:
        """A prune edit set of the top-``k`` neurons (by |effect|), one op per site
        (``prune_head`` ops when the units are heads)."""
        top = self.top(k)
        if not top:
            raise InputError(f"no {self.unit}s to prune (k = 0 or no scores)")
        by_site: dict[str, list[int]] = {}
        for s, n, _ in top:
            by_site.setdefault(s, []).append(n)
        note = f"top {len(top)} by |{self.method} effect| on {self.metric_text}"
        if self.unit == "head":
            from neurolens.spec.head_edits import PruneHead
            ops = [PruneHead(s, sorted(hs), note=note) for s, hs in by_site.items()]
        else:
            ops = [Prune(s, sorted(ns), note=note) for s, ns in by_site.items()]
        return EditSet(ops, ModelRef(self.model_name, self.fingerprint))

    def header(self) -> dict:
        return {"method": self.method, "metric": self.metric, "metric_text": self.metric_text,
                "corruption": self.corruption, "clean": self.clean, "corrupted": self.corrupted,
                "position": self.position, "sites": self.sites, "prompts": len(self.prompts),
                "per": self.unit}

    def to_json(self, top: int = 20, arrays: bool = False) -> dict:
        d = self.header()
        d["top"] = [{"site": s, "neuron": n, **({"head": n} if self.unit == "head" else {}),
                     "label": unit_label(s, n, self.unit), "effect": e}
                    for s, n, e in self.top(top)]
        d["tokens"] = self.tokens[0] if len(self.tokens) == 1 else None
        if self.verified:
            d["verified"] = self.verified
        if arrays:
            d["effects"] = {s: np.nan_to_num(v).tolist() for s, v in self.effects.items()}
        return d

    def summary(self, top: int = 10) -> str:
        where = "summed over positions" if self.position is None else \
            f"at position {self.position}"
        corr = "corrupted prompts" if self.corruption == "prompts" else \
            f"{self.corruption} ablation"
        unit = " per head" if self.unit == "head" else ""
        lines = [f"{self.method} on {len(self.sites)} site(s){unit}, {len(self.prompts)} "
                 "prompt(s); "
                 f"metric {self.metric_text}: clean {self.clean:.4f}, {corr} "
                 f"{self.corrupted:.4f}", f"top {top} by |effect| ({where}):"]
        exact = {(v["site"], v["neuron"]): v["exact"] for v in self.verified}
        for s, n, e in self.top(top):
            p = parse_site(s)
            label = unit_label(s, n, self.unit,
                               with_kind=p is not None and p.kind != "mlp.hook_post")
            extra = f"  exact {exact[(s, n)]:+.4f}" if (s, n) in exact else ""
            lines.append(f"  {label:14s} {e:+.4f}{extra}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """A capture-format file: ``{site}/{i}`` is prompt i's ``[tokens, width]`` effects
        (exact patching: ``[1, width]``, positions together), with the capture metadata
        (``reduce`` says which) and the attribution's header."""
        from neurolens.store.shards import SafetensorsStreamWriter
        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"--out must end in .safetensors, got {path}")
        with SafetensorsStreamWriter(path) as w:
            for s in self.sites:
                for i in range(len(self.prompts)):
                    a = (self.per_prompt[s][i] if self.per_prompt is not None
                         else self.effects[s][None])
                    w.add(f"{s}/{i}", np.ascontiguousarray(a, dtype=np.float32))
            meta = {"format": "neurolens.capture/1", "prompts": json.dumps(self.prompts),
                    "tokens": json.dumps(self.tokens), "sites": json.dumps(self.sites),
                    "reduce": "tokens" if self.per_prompt is not None else "sum",
                    "attribution": json.dumps(self.header())}
            return w.close(meta)
