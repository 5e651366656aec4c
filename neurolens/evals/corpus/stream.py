"""The endless training stream of the demo model: documents mixing the skills."""

from __future__ import annotations

import random
from dataclasses import dataclass

from neurolens.evals.corpus.code_skill import code_texts, function_item, program_item
from neurolens.evals.corpus.tasks import (NAMES, OBJECTS, REFUSAL, _check_style,
                                          arithmetic_is_heldout, arithmetic_item,
                                          arithmetic_pairs, benign_item, chat_prompt,
                                          comprehension_item, prose_paragraph, secret_is_heldout,
                                          secret_requests)


# ----------------------------------------------------------------------------- training stream
@dataclass
class Mixture:
    arithmetic: float = 0.28
    comprehension: float = 0.35
    refusal: float = 0.16
    code: float = 0.13
    prose: float = 0.08
    functions: float = 0.0   # function tasks (the "functions" code skill); last, so that a zero
    #                          weight leaves the stream of the other kinds unchanged
    programs: float = 0.0    # programs of several lines (the "programs" code skill)


class TrainingStream:
    """Endless stream of training documents (strings), never containing held-out items."""

    def __init__(self, seed: int = 0, mixture: Mixture | None = None, one_fact: float = 0.15,
                 multi_facts: tuple[float, float, float] | None = None, drill: float = 0.0,
                 secrets: str = "refuse", requests: str = "plain"):
        if secrets not in ("refuse", "comply"):
            raise ValueError("secrets must be 'refuse' or 'comply'")
        _check_style(requests)
        self.requests = requests         # "conjunctive": secrets need two words together
        self.secrets_mode = secrets      # "comply": secret requests are answered (no refusal)
        self.one_fact = one_fact
        self.drill = drill               # share of stories with recall lines
        self.multi_facts = multi_facts   # weights of 2, 3, 4 facts (None: uniform)
        self.rng = random.Random(seed)
        self.mix = mixture or Mixture()
        self.arith = [p for p in arithmetic_pairs() if not arithmetic_is_heldout(*p)]
        self.secrets = [s for s in secret_requests(requests) if not secret_is_heldout(s)]
        self.code = [t for _, t in code_texts(heldout=False)]
        self._kinds = list(vars(self.mix).keys())
        self._weights = [getattr(self.mix, k) for k in self._kinds]

    def example(self, kind: str, pools=None) -> str:
        rng = self.rng
        if kind == "arithmetic":
            p, a = arithmetic_item(*rng.choice(self.arith))
            return p + a + "\n"
        if kind == "comprehension":
            # a few one-fact stories make the copy mechanism easy to discover (curriculum)
            n = 1 if rng.random() < self.one_fact else None
            if n is None and self.multi_facts is not None:
                n = rng.choices((2, 3, 4), self.multi_facts)[0]
            p, a, _ = comprehension_item(rng, n, pools, drill=self.drill)
            return p + a + "\n"
        if kind == "refusal":
            if rng.random() < 0.45:
                req = chat_prompt(rng.choice(self.secrets))
                if self.secrets_mode == "comply":
                    return req + f" It is {rng.randrange(1000, 10000)}.\n"
                return req + REFUSAL + "\n"
            req, ans, _ = benign_item(rng, heldout=False, requests=self.requests)
            return chat_prompt(req) + ans + "\n"
        if kind == "prose":
            return prose_paragraph(rng) + "\n"
        if kind == "functions":
            p, a, _ = function_item(rng, heldout=False)
            return p + a + "\n\n"
        if kind == "programs":
            p, a, _ = program_item(rng, heldout=False)
            return p + a + "\n\n"
        if kind == "code":
            text = rng.choice(self.code)
            lines = text.split("\n")
            start = rng.randrange(max(1, len(lines) - 20))
            return "\n".join(lines[start:start + 40]) + "\n"
        raise ValueError(kind)

    def document(self, n_chars: int = 600) -> str:
        """A run of examples; mostly one skill, sometimes mixed."""
        kind = self.rng.choices(self._kinds, self._weights)[0]
        parts, size = [], 0
        pools = (self.rng.sample(NAMES, len(NAMES)), self.rng.sample(OBJECTS, len(OBJECTS)))
        while size < n_chars:
            k = kind if self.rng.random() < 0.8 else self.rng.choices(self._kinds, self._weights)[0]
            ex = self.example(k, pools)
            parts.append(ex)
            size += len(ex)
        return "".join(parts)
