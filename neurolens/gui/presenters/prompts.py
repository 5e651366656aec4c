"""The prompt list: prompts in named sets, the answers loaded with them, and what a run takes.

A :class:`PromptList` holds ``(set name, prompt)`` rows in the order they were added and the
answers of prompts loaded from answered sets (they stop, score and probe their prompts). It gives
the set names (first-seen order), the prompt table's rows, and the prompts, sets, answers and
per-row stop strings of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunPrompts:
    """What a run takes from the prompt panel."""

    prompts: tuple[str, ...]
    set_names: tuple[str, ...]
    answers: tuple[str | None, ...]
    row_stop: tuple[tuple[str, ...], ...] | None = None


@dataclass
class PromptList:
    rows: list[tuple[str, str]] = field(default_factory=list)   # (set name, prompt)
    answers: dict[str, str] = field(default_factory=dict)       # prompt -> its answer

    def add(self, prompts: list[str], set_name: str) -> str:
        """Add prompts to a set (blank names become "prompts"); returns the set name used."""
        set_name = set_name.strip() or "prompts"
        self.rows += [(set_name, p) for p in prompts]
        return set_name

    def add_answered(self, rows: list[tuple[str, str | None]], set_name: str) -> str:
        """Add (prompt, answer) rows as a set; the answers, where given, are kept."""
        for prompt, answer in rows:
            if answer is not None:
                self.answers[prompt] = answer
        return self.add([prompt for prompt, _ in rows], set_name)

    def replace(self, rows, answers: dict | None = None) -> None:
        self.rows = [tuple(r) for r in rows]
        self.answers = dict(answers or {})

    def clear(self) -> None:
        self.rows.clear()

    def set_names(self) -> list[str]:
        """The sets in the order they first appear."""
        return list(dict.fromkeys(s for s, _ in self.rows))

    def table_rows(self) -> list[tuple[str, str, int]]:
        """The prompt table: (set, prompt on one line, colour index of the set)."""
        names = self.set_names()
        return [(s, p.replace("\n", " ⏎ "), names.index(s)) for s, p in self.rows]

    def by_set(self) -> dict[str, list[dict]]:
        """Each set's rows as ``{"prompt", "answer"}`` (answer None where there is none)."""
        out: dict[str, list[dict]] = {}
        for s, p in self.rows:
            out.setdefault(s, []).append({"prompt": p, "answer": self.answers.get(p)})
        return out

    def move_to_set(self, chosen, name: str | None = None) -> str:
        """Move the prompts in ``chosen`` into a set of their own, named ``name`` or, where
        that is missing or taken, the first free "lasso k"; returns the name."""
        existing = set(self.set_names())
        k = 1
        while name is None or name in existing:
            name = f"lasso {k}"
            k += 1
        chosen = set(chosen)
        self.rows = [(name if p in chosen else s, p) for s, p in self.rows]
        return name

    def for_run(self, use_list: bool, typed: str, typed_set: str,
                stop_at_answers: bool) -> RunPrompts | None:
        """The list's prompts (``use_list`` and the list is not empty) or the typed prompt
        alone; None when there is nothing to run. With ``stop_at_answers`` the rows that have an
        answer stop where it ends."""
        if use_list and self.rows:
            sets = tuple(s for s, _ in self.rows)
            prompts = tuple(p for _, p in self.rows)
        else:
            if not typed.strip():
                return None
            sets, prompts = (typed_set.strip() or "typed",), (typed,)
        answers = tuple(self.answers.get(p) for p in prompts)
        row_stop = None
        if stop_at_answers and any(a is not None for a in answers):
            from neurolens.evals.skills import answer_stop
            row_stop = tuple((answer_stop(a),) if a is not None else () for a in answers)
        return RunPrompts(prompts, sets, answers, row_stop)
