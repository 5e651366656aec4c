"""The code skill of the demo corpus: next lines of the interpreter's stdlib sources
("stdlib"), function tasks ("functions") and programs of several lines ("programs")."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

from neurolens.evals.corpus.tasks import _h


# ----------------------------------------------------------------------------- code
def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if 2_000 < p.stat().st_size < 150_000)
    return files


def code_is_heldout(path: Path) -> bool:
    return _h("code" + path.name) % 8 == 0


def _clean_code(text: str) -> str:
    # ASCII only, tabs as spaces, no runs of blank lines: keeps the tokenizer small.
    text = text.encode("ascii", "ignore").decode().replace("\t", "    ")
    lines = [ln.rstrip() for ln in text.splitlines()]
    out, blank = [], 0
    for ln in lines:
        blank = blank + 1 if not ln else 0
        if blank <= 1:
            out.append(ln)
    return "\n".join(out) + "\n"


def code_texts(heldout: bool) -> list[tuple[str, str]]:
    return [(p.name, _clean_code(p.read_text(errors="ignore")))
            for p in stdlib_files() if code_is_heldout(p) == heldout]


def code_items(rng: random.Random, heldout: bool, n: int) -> list[tuple[str, str]]:
    """(prompt, answer): a few lines of context and the next non-empty line."""
    texts = code_texts(heldout)
    items = []
    while len(items) < n:
        _, text = rng.choice(texts)
        lines = text.split("\n")
        if len(lines) < 12:
            continue
        i = rng.randrange(6, len(lines) - 1)
        nxt = lines[i]
        if len(nxt.strip()) < 8 or len(nxt) > 80:
            continue
        ctx = lines[max(0, i - 6):i]
        prompt = "\n".join(ctx) + "\n"
        if len(prompt) > 240:
            prompt = prompt[-240:]
            prompt = prompt[prompt.index("\n") + 1:] if "\n" in prompt[:-1] else prompt
        items.append((prompt, nxt + "\n"))
    return items


# ----------------------------------------------------------------------------- function tasks
# The "functions" code skill (an option of the corpus): the MBPP stand-in as a task, not a text.
# A signature and a docstring ask for a function; the model writes the body's return
# expression, which is scored by exact match (a stand-in for pass@1). The tasks are a fixed set
# of kinds with varied names, so the skill can be learnt by a small model and is local enough to
# be forgotten; the stdlib text stays in the training mix as general Python.
NUM_ARGS = ["a", "b", "x", "y", "n", "m", "k", "num", "value", "total", "count", "width",
            "height", "price", "score", "left", "right", "first", "second", "limit"]
LIST_ARGS = ["xs", "items", "values", "nums", "data", "scores", "numbers", "prices", "row",
             "ages"]
STR_ARGS = ["s", "text", "word", "name", "line", "title", "label", "msg"]
CODE_STYLES = ("stdlib", "functions", "programs")
# (function names, docstring, return expression, argument kinds): n number, l list, s string,
# c a constant 2-9 that appears in the docstring only
FUNCTION_TASKS = [
    (("add", "plus", "add_two"), "Return the sum of {0} and {1}.", "{0} + {1}", "nn"),
    (("subtract", "minus", "difference"), "Return {0} minus {1}.", "{0} - {1}", "nn"),
    (("multiply", "product", "times"), "Return the product of {0} and {1}.", "{0} * {1}", "nn"),
    (("larger", "bigger", "maximum"), "Return the larger of {0} and {1}.", "max({0}, {1})", "nn"),
    (("smaller", "lesser", "minimum"), "Return the smaller of {0} and {1}.", "min({0}, {1})",
     "nn"),
    (("increase", "shift", "add_const"), "Return {0} plus {1}.", "{0} + {1}", "nc"),
    (("scale", "multiply_by", "times_const"), "Return {0} times {1}.", "{0} * {1}", "nc"),
    (("is_even", "even", "check_even"), "Return True if {0} is even.", "{0} % 2 == 0", "n"),
    (("divisible", "is_multiple", "divides"), "Return True if {0} is divisible by {1}.",
     "{0} % {1} == 0", "nc"),
    (("absolute", "magnitude", "abs_value"), "Return the absolute value of {0}.", "abs({0})",
     "n"),
    (("square", "squared", "power_two"), "Return the square of {0}.", "{0} ** 2", "n"),
    (("length", "size", "count_items"), "Return the number of items in {0}.", "len({0})", "l"),
    (("head", "first_item", "front"), "Return the first item of {0}.", "{0}[0]", "l"),
    (("last", "last_item", "back"), "Return the last item of {0}.", "{0}[-1]", "l"),
    (("take", "prefix", "first_n"), "Return the first {1} items of {0}.", "{0}[:{1}]", "lc"),
    (("sort_items", "ordered", "sort_list"), "Return {0} sorted.", "sorted({0})", "l"),
    (("sort_desc", "reverse_sorted", "descending"), "Return {0} sorted in reverse order.",
     "sorted({0}, reverse=True)", "l"),
    (("sum_items", "add_all", "grand_total"), "Return the sum of the items in {0}.", "sum({0})",
     "l"),
    (("largest", "max_item", "top"), "Return the largest item in {0}.", "max({0})", "l"),
    (("reverse", "backwards", "flip"), "Return {0} reversed.", "{0}[::-1]", "l"),
    (("upper", "shout", "to_upper"), "Return {0} in upper case.", "{0}.upper()", "s"),
    (("lower", "quiet", "to_lower"), "Return {0} in lower case.", "{0}.lower()", "s"),
    (("strip", "trim", "clean"), "Return {0} without surrounding spaces.", "{0}.strip()", "s"),
    (("words", "split_words", "tokens"), "Return the words of {0}.", "{0}.split()", "s"),
    (("count_of", "occurrences", "how_many"), "Return how many times {1} appears in {0}.",
     "{0}.count({1})", "ln"),
    (("contains", "has_item", "member"), "Return True if {1} is in {0}.", "{1} in {0}", "ln"),
    (("doubled", "double_all", "twice"), "Return {0} with every item doubled.",
     "[v * 2 for v in {0}]", "l"),
    (("above", "greater_than", "keep_big"), "Return the items of {0} greater than {1}.",
     "[v for v in {0} if v > {1}]", "lc"),
    (("average", "mean", "avg"), "Return the average of {0}.", "sum({0}) / len({0})", "l"),
    (("starts", "begins_with", "has_prefix"), "Return True if {0} starts with {1}.",
     "{0}.startswith({1})", "ss"),
]
_ARG_POOLS = {"n": NUM_ARGS, "l": LIST_ARGS, "s": STR_ARGS}


def _check_code(code: str) -> None:
    if code not in CODE_STYLES:
        raise ValueError(f"code must be one of {CODE_STYLES}, not {code!r}")


def _draw_args(rng: random.Random, kinds: str, params: list[str]) -> list[str]:
    """Values for argument kinds: a constant 2-9 for "c", else a new parameter name of that kind
    (appended to ``params``, never one already there)."""
    vals = []
    for kind in kinds:
        if kind == "c":
            vals.append(str(rng.randrange(2, 10)))
            continue
        name = rng.choice([a for a in _ARG_POOLS[kind] if a not in params])
        vals.append(name)
        params.append(name)
    return vals


def function_item(rng: random.Random, heldout: bool | None = None) -> tuple[str, str, int]:
    """(prompt ending in '    return', answer ' <expression>', task index). Held-out items are
    whole prompts (a task with a combination of names) reserved for evaluation."""
    while True:
        i = rng.randrange(len(FUNCTION_TASKS))
        fnames, doc, expr, kinds = FUNCTION_TASKS[i]
        params: list[str] = []
        vals = _draw_args(rng, kinds, params)
        prompt = (f"def {rng.choice(fnames)}({', '.join(params)}):\n"
                  f'    """{doc.format(*vals)}"""\n    return')
        if heldout is None or function_is_heldout(prompt) == heldout:
            return prompt, " " + expr.format(*vals), i


def function_is_heldout(prompt: str) -> bool:
    return _h("function" + prompt) % 5 == 0


# "programs" (another option of the code skill): a docstring asks for one to three steps and the
# model writes the whole body, one line per step, scored by exact match of the body. Nearer to
# MBPP, whose solutions are programs of several lines, than one return expression.
PROGRAM_NAMES = ["compute", "process", "transform", "solve", "calc", "pipeline", "helper", "work"]
# first steps: (docstring clause, expression, argument kinds, result type); n number, l list,
# s string, c constant
_PROGRAM_FIRST = [
    ("add {0} and {1}", "{0} + {1}", "nn", "n"),
    ("subtract {1} from {0}", "{0} - {1}", "nn", "n"),
    ("multiply {0} by {1}", "{0} * {1}", "nn", "n"),
    ("take the larger of {0} and {1}", "max({0}, {1})", "nn", "n"),
    ("take the smaller of {0} and {1}", "min({0}, {1})", "nn", "n"),
    ("add {1} to {0}", "{0} + {1}", "nc", "n"),
    ("square {0}", "{0} ** 2", "n", "n"),
    ("take the absolute value of {0}", "abs({0})", "n", "n"),
    ("sort {0}", "sorted({0})", "l", "l"),
    ("reverse {0}", "{0}[::-1]", "l", "l"),
    ("keep the first {1} items of {0}", "{0}[:{1}]", "lc", "l"),
    ("double every item of {0}", "[v * 2 for v in {0}]", "l", "l"),
    ("keep the items of {0} greater than {1}", "[v for v in {0} if v > {1}]", "lc", "l"),
    ("strip {0}", "{0}.strip()", "s", "s"),
    ("make {0} upper case", "{0}.upper()", "s", "s"),
    ("make {0} lower case", "{0}.lower()", "s", "s"),
]
# later steps on the result so far: (clause, expression, argument kinds, type in, type out);
# w is a list of words
_PROGRAM_STEPS = [
    ("add {0}", "result + {0}", "c", "n", "n"),
    ("subtract {0}", "result - {0}", "c", "n", "n"),
    ("multiply it by {0}", "result * {0}", "c", "n", "n"),
    ("square it", "result ** 2", "", "n", "n"),
    ("take the larger of it and {0}", "max(result, {0})", "n", "n", "n"),
    ("sort it", "sorted(result)", "", "l", "l"),
    ("reverse it", "result[::-1]", "", "l", "l"),
    ("keep the first {0} items", "result[:{0}]", "c", "l", "l"),
    ("double every item", "[v * 2 for v in result]", "", "l", "l"),
    ("keep the items greater than {0}", "[v for v in result if v > {0}]", "c", "l", "l"),
    ("take the sum", "sum(result)", "", "l", "n"),
    ("take the largest item", "max(result)", "", "l", "n"),
    ("count the items", "len(result)", "", "l", "n"),
    ("make it upper case", "result.upper()", "", "s", "s"),
    ("strip it", "result.strip()", "", "s", "s"),
    ("split it into words", "result.split()", "", "s", "w"),
    # a list of words (w) takes only the steps that do not need numbers
    ("sort it", "sorted(result)", "", "w", "w"),
    ("reverse it", "result[::-1]", "", "w", "w"),
    ("keep the first {0} items", "result[:{0}]", "c", "w", "w"),
    ("count the items", "len(result)", "", "w", "n"),
]


def program_item(rng: random.Random, heldout: bool | None = None) -> tuple[str, str, int]:
    """(prompt ending in the docstring's quotes, answer: a newline and the body lines, number
    of steps)."""
    while True:
        params: list[str] = []
        clause, expr, kinds, typ = rng.choice(_PROGRAM_FIRST)
        vals = _draw_args(rng, kinds, params)
        clauses, lines = [clause.format(*vals)], [f"    result = {expr.format(*vals)}"]
        for _ in range(rng.randrange(3)):
            clause, expr, kinds, t_in, t_out = rng.choice(
                [st for st in _PROGRAM_STEPS if st[3] == typ])
            vals = _draw_args(rng, kinds, params)
            clauses.append(clause.format(*vals))
            lines.append(f"    result = {expr.format(*vals)}")
            typ = t_out
        doc = ", then ".join(clauses)
        doc = doc[0].upper() + doc[1:] + ", and return the result."
        # the prompt stops at the docstring's quotes: the newline and indent that follow are one
        # token in training text, so the answer starts with them
        prompt = f'def {rng.choice(PROGRAM_NAMES)}({", ".join(params)}):\n    """{doc}"""'
        answer = "\n" + "\n".join(lines + ["    return result"])
        if heldout is None or function_is_heldout(prompt) == heldout:
            return prompt, answer, len(clauses)
