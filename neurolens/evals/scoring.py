"""Scores of a before/after comparison per prompt set (the GUI's Compare table).

A prompt with an answer (loaded from an answered set) counts as right where its generation's
answer part equals the answer (:func:`neurolens.evals.skills.answer_correct`, the rule every
exact-match score here uses). Each set with answered prompts gets its share of right answers
before and after the edits and their ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

from neurolens.evals.skills import answer_correct


def set_scores(set_names: Sequence[str], answers: Sequence[str | None] | None,
               before: Sequence[str], after: Sequence[str]) -> list[dict]:
    """Per prompt set (first-seen order) with answered prompts: ``{"set", "n", "before",
    "after", "relative"}`` (``relative``: after / before, None where before is 0). ``before``
    and ``after`` are the generated texts, one per prompt."""
    answers = answers or (None,) * len(set_names)
    out = []
    for name in dict.fromkeys(set_names):
        idx = [i for i, s in enumerate(set_names) if s == name and answers[i] is not None]
        if not idx:
            continue

        def score(texts, idx=idx):
            return sum(answer_correct(texts[i], answers[i]) for i in idx) / len(idx)
        b, a = score(before), score(after)
        out.append({"set": name, "n": len(idx), "before": b, "after": a,
                    "relative": a / b if b > 0 else None})
    return out
