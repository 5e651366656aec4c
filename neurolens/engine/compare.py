"""Before/after comparison: same prompts, same seed, baseline vs edited."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurolens.engine.runner import GenerationOutput, first_divergence, logsoftmax_np
from neurolens.spec.edits import EditSet
from neurolens.spec.run import GenerationParams


@dataclass
class PromptComparison:
    prompt: str
    baseline: GenerationOutput
    edited: GenerationOutput
    first_divergence: int | None            # index into the generated tokens, None if equal
    kl_per_token: list[float] = field(default_factory=list)  # KL(base || edited), teacher-forced
    p_base: list[float] = field(default_factory=list)      # P_base(baseline token) per step
    p_edited: list[float] = field(default_factory=list)    # P_edited(baseline token) per step

    @property
    def changed(self) -> bool:
        return self.baseline.token_ids != self.edited.token_ids

    @property
    def mean_kl(self) -> float:
        return float(np.mean(self.kl_per_token)) if self.kl_per_token else 0.0

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "baseline": self.baseline.text, "edited": self.edited.text,
                "changed": self.changed, "first_divergence": self.first_divergence,
                "mean_kl": round(self.mean_kl, 6),
                "kl_per_token": [round(v, 6) for v in self.kl_per_token],
                "baseline_tokens": self.baseline.tokens, "edited_tokens": self.edited.tokens,
                "p_baseline": [round(v, 6) for v in self.p_base],
                "p_edited": [round(v, 6) for v in self.p_edited]}


@dataclass
class Comparison:
    items: list[PromptComparison]

    @property
    def n_changed(self) -> int:
        return sum(c.changed for c in self.items)

    @property
    def mean_kl(self) -> float:
        return float(np.mean([c.mean_kl for c in self.items])) if self.items else 0.0

    def __getitem__(self, i) -> PromptComparison:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def to_json(self) -> dict:
        return {"n_prompts": len(self.items), "n_changed": self.n_changed,
                "mean_kl": round(self.mean_kl, 6), "items": [c.to_json() for c in self.items]}


def compare(lm, prompts, edits: EditSet, params: GenerationParams | None = None,
            **gen_kwargs) -> Comparison:
    """Generate with and without ``edits`` (same seed, same settings: ``params`` or the
    keyword settings of ``generate``, 16 new tokens unless said), then score the edited
    model's next-token distributions against the baseline's on the baseline continuation."""
    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if params is None:
        gen_kwargs.setdefault("max_new_tokens", 16)
        gen_kwargs["stop"] = tuple(gen_kwargs.get("stop", ()))
        params = GenerationParams(**gen_kwargs)
    base = lm.generate(prompts, edits=None, params=params)
    edited = lm.generate(prompts, edits=edits, params=params)
    # teacher-forced on prompt + baseline continuation
    seqs, starts = [], []
    for p, b in zip(prompts, base):
        ids = lm.encode([p])["input_ids"][0].tolist()
        starts.append(len(ids))
        seqs.append(ids + b.token_ids)
    bs = params.batch_size
    lb = lm.logits(seqs, edits=None, batch_size=bs)
    le = lm.logits(seqs, edits=edits, batch_size=bs)
    items = []
    for p, b, e, s, x, y in zip(prompts, base, edited, starts, lb, le):
        n = len(b.token_ids)
        kl, pb, pe = [], [], []
        if n:
            lp = logsoftmax_np(x[s - 1:s - 1 + n].astype(np.float64))
            lq = logsoftmax_np(y[s - 1:s - 1 + n].astype(np.float64))
            kl = (np.exp(lp) * (lp - lq)).sum(-1).clip(min=0).tolist()
            tgt = np.array(b.token_ids)
            pb = np.exp(lp[np.arange(n), tgt]).tolist()
            pe = np.exp(lq[np.arange(n), tgt]).tolist()
        items.append(PromptComparison(p, b, e, first_divergence(b.token_ids, e.token_ids),
                                      kl, pb, pe))
    return Comparison(items)
