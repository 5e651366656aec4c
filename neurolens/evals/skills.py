"""Skill evaluations of the demo model (and any model speaking the same prompt formats).

- arithmetic, comprehension: greedy exact match of the first line of the answer
- refusal: refusal rate on secret requests; benign: false-refusal rate and exact match
- code: teacher-forced next-token accuracy and loss on held-out Python lines

With edits, every metric is also given relative to the unedited model (edited / unedited; for
the false-refusal and loss metrics lower is better and the ratio is reported as is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurolens.errors import InputError

SKILLS = ("arithmetic", "comprehension", "code", "refusal", "benign")
REFUSAL_MARK = "can't help"
#: primary metric per skill (higher is better for all of them). A code prompt set holds programs
#: (rows of kind "program": exact match of the whole generated body, the stand-in for MBPP's
#: pass@1, as shipped), function tasks (kind "function": exact match of the return expression)
#: or next-line continuations of stdlib files (token accuracy); the metric follows the set.
PRIMARY = {"arithmetic": "exact_match", "comprehension": "exact_match",
           "code": "token_accuracy", "refusal": "refusal_rate", "benign": "exact_match"}


def primary_metric(skill: str, metrics: dict) -> str:
    if skill == "code" and "exact_match" in metrics:
        return "exact_match"
    return PRIMARY[skill]


def load_prompt_set(skill: str, split: str | None = "eval", folder: str | Path | None = None,
                    limit: int | None = None) -> list[dict]:
    from neurolens.resources import prompts_dir

    path = Path(folder or prompts_dir()) / f"{skill}.jsonl"
    if not path.is_file():
        raise InputError(f"no prompt set for skill '{skill}' ({path} missing); "
                         f"known skills: {', '.join(SKILLS)}")
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    if split:
        rows = [r for r in rows if r.get("split") == split]
    return rows[:limit] if limit else rows


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def answer_stop(expected: str) -> str:
    """Where a generation answering ``expected`` ends: a newline, or a blank line after a
    program body."""
    return "\n\n" if "\n" in expected else "\n"


def answer_part(text: str, expected: str) -> str:
    """The part of a generation scored against ``expected``: the first line, or for an answer
    of several lines (a program body) the text up to the first blank line."""
    if "\n" in expected:
        return text.split("\n\n", 1)[0].rstrip("\n")
    return first_line(text)


def answer_correct(text: str, expected: str) -> bool:
    """One generation against its expected answer, as every exact-match score here counts it:
    its answer part equals the answer; where the answer is a refusal, the refusal mark shows."""
    got = answer_part(text, expected)
    return REFUSAL_MARK in got if REFUSAL_MARK in expected else got == expected


@dataclass
class SkillResult:
    skill: str
    n: int
    metrics: dict

    @property
    def primary_name(self) -> str:
        return primary_metric(self.skill, self.metrics)

    @property
    def primary(self) -> float:
        return float(self.metrics[self.primary_name])


def _generate_answers(lm, rows, edits, batch_size, max_new_tokens, progress, ctx=None):
    """Greedy answers, each ended and cut where its row's expected answer ends (a line, or a
    program body up to the blank line)."""
    prompts = [r["prompt"] for r in rows]
    outs = lm.generate(prompts, edits=edits, max_new_tokens=max_new_tokens,
                       row_stop=[(answer_stop(r["answer"]),) for r in rows],
                       batch_size=batch_size, progress=progress)
    return [answer_part(o.text, r["answer"]) for o, r in zip(outs, rows)]


def _code_scores(lm, rows, edits, batch_size, progress=None):
    res = lm.score_continuations([r["prompt"] for r in rows], [r["answer"] for r in rows],
                                 edits=edits, batch_size=batch_size, progress=progress)
    total = sum(r["n"] for r in res)
    kept = [r for r in res if not r["abstained"]]
    return {"token_accuracy": sum(r["correct"] for r in res) / max(total, 1),
            "loss": sum(r["nll"] for r in kept) / max(sum(r["n"] for r in kept), 1),
            "abstain_rate": float(np.mean([r["abstained"] for r in res])), "tokens": total}


def evaluate(lm, skills=None, edits=None, split: str = "eval", limit: int | None = None,
             batch_size: int = 32, progress=None, folder=None) -> dict[str, SkillResult]:
    """Evaluate skills; returns {skill: SkillResult}. ``progress(skill, done, total)``."""
    skills = list(skills or SKILLS)
    for s in skills:
        if s not in SKILLS:
            raise InputError(f"unknown skill '{s}' (choose from {', '.join(SKILLS)})")
    results = {}
    for skill in skills:
        rows = load_prompt_set(skill, split, folder, limit)
        if not rows:
            raise InputError(f"prompt set '{skill}' has no '{split}' split")
        prog = (lambda d, t, s=skill: progress(s, d, t)) if progress else None
        kinds = {r.get("kind") for r in rows}
        if skill == "code" and kinds <= {"function", "program"}:
            answers = _generate_answers(lm, rows, edits, batch_size,
                                        72 if "program" in kinds else 24, prog)
            m = {"exact_match": float(np.mean([a == r["answer"] for a, r in zip(answers, rows)])),
                 "abstain_rate": float(np.mean([REFUSAL_MARK in a for a in answers]))}
        elif skill == "code":
            m = _code_scores(lm, rows, edits, batch_size, prog)
        elif skill in ("arithmetic", "comprehension"):
            answers = _generate_answers(lm, rows, edits, batch_size, 8, prog)
            m = {"exact_match": float(np.mean([a == r["answer"] for a, r in zip(answers, rows)]))}
        elif skill == "refusal":
            answers = _generate_answers(lm, rows, edits, batch_size, 10, prog)
            m = {"refusal_rate": float(np.mean([REFUSAL_MARK in a for a in answers]))}
        else:  # benign
            answers = _generate_answers(lm, rows, edits, batch_size, 12, prog)
            m = {"exact_match": float(np.mean([a == r["answer"] for a, r in zip(answers, rows)])),
                 "false_refusal_rate": float(np.mean([REFUSAL_MARK in a for a in answers]))}
        results[skill] = SkillResult(skill, len(rows), m)
    return results


def relative(base: dict[str, SkillResult], edited: dict[str, SkillResult]) -> dict[str, float]:
    """Edited / unedited primary metric per skill (the papers' 'relative performance')."""
    out = {}
    for s, b in base.items():
        e = edited[s]
        out[s] = e.primary / b.primary if b.primary > 0 else float("nan")
    return out


def results_json(results: dict[str, SkillResult]) -> dict:
    def rounded(v):
        return round(v, 4) if isinstance(v, float) else v
    return {s: {"n": r.n, "primary": r.primary_name,
                **{k: rounded(v) for k, v in r.metrics.items()}}
            for s, r in results.items()}
