"""The Methods form as data, read from the method registry.

For each registered method that applies to the loaded model's kind: its parameter inputs (from
the fields of its params dataclass: type, default, choices, label and help), its prompt-set role
pickers (from its roles) and the sets they pick by default; and, when it is fitted, the texts of
each role from the prompt list (:func:`method_sets`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neurolens.methods import registry
from neurolens.gui.presenters.prompts import PromptList

#: the choice, in a set picker that has a partner, of every loaded set but the partner's: its
#: text, and its value in the form's params (no set name holds a NUL, so none can be taken for it)
ALL_OTHERS = "all other sets"
ALL_OTHERS_KEY = "\0all other sets"
#: where no set is picked yet, a role takes the first set whose name matches one of its hints
#: (lower case: a prefix with "^", else a part of the name), in the order of the hints
ROLE_HINTS = {"harmful": ("refus", "^harmful")}


def methods_for(kind: str) -> list[registry.MethodSpec]:
    """The registered methods that apply to a model kind, in registration order."""
    return registry.for_kind(kind)


def offers_all_others(role: registry.Role) -> bool:
    """A role that takes several sets and must differ from a partner offers "all other sets"
    (every loaded set but the partner's)."""
    return bool(role.many and role.differs_from)


@dataclass(frozen=True)
class Field:
    """One parameter input of a method's form."""

    name: str
    label: str
    kind: str              # "int" | "float" | "bool" | "choice" | "text"
    default: Any
    choices: tuple = ()
    help: str = ""


def form_fields(spec: registry.MethodSpec) -> list[Field]:
    """The inputs of a method's params dataclass: numbers, check boxes, a choice where the field
    lists its values, else a text input (empty: the field's default)."""
    out = []
    for f in dataclasses.fields(spec.params):
        meta = f.metadata or {}
        default = f.default if f.default is not dataclasses.MISSING else None
        label = meta.get("label") or f.name.replace("_", " ")
        choices = tuple(meta.get("choices") or ())
        if choices:
            kind = "choice"
        elif isinstance(default, bool):
            kind = "bool"
        elif type(default) is int:
            kind = "int"
        elif type(default) is float:
            kind = "float"
        else:
            kind = "text"
        start = meta.get("form") if meta.get("form") is not None else default
        out.append(Field(f.name, label, kind, start, choices, meta.get("help", "")))
    return out


def text_value(text: str) -> Any:
    """A text input's value: None for empty (the default), else a number or the text."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _hinted(role: str, names: list[str]) -> str | None:
    for hint in ROLE_HINTS.get(role, ()):
        for n in names:
            low = n.lower()
            if (low.startswith(hint[1:]) if hint.startswith("^") else hint in low):
                return n
    return None


def role_choices(role: registry.Role, names: list[str]) -> list[tuple[str, str]]:
    """The (text, value) items of a role's set picker."""
    items = [(n, n) for n in names]
    if offers_all_others(role) and len(names) > 1:
        items.append((ALL_OTHERS, ALL_OTHERS_KEY))
    return items


def role_defaults(spec: registry.MethodSpec, names: list[str],
                  picked: dict[str, str] | None = None) -> dict[str, str]:
    """The set each role's picker shows for the loaded sets ``names``: the one the user picked
    where it is still there; else a role with a partner takes every other set (three sets or
    more, where it offers that) or the second set, a role without one its hinted set or the
    first; finally a role never shows its partner's set while another is there."""
    picked = picked or {}
    out: dict[str, str] = {}
    for role in spec.roles:
        values = [v for _, v in role_choices(role, names)]
        cur = picked.get(role.name)
        if cur is not None and cur in values:
            out[role.name] = cur
            continue
        if role.differs_from:
            want = ALL_OTHERS_KEY if offers_all_others(role) and len(names) > 2 else \
                (names[1] if len(names) > 1 else None)
        else:
            want = _hinted(role.name, names)
        out[role.name] = want if want in values else (values[0] if values else "")
    for role in spec.roles:
        partner = role.differs_from
        if partner in out and out[role.name] == out[partner]:
            other = [n for n in names if n != out[partner]]
            if other:
                out[role.name] = other[0]
    return out


def answers_label(spec: registry.MethodSpec) -> str:
    """The form's check box for probing prompt + answer (its methods' answered roles)."""
    roles = spec.answered_roles
    if len(roles) == len(spec.roles):
        return "probe the answers too"
    return f"probe the {' and '.join(roles)} answers too"


def method_sets(prompts: PromptList, spec: registry.MethodSpec,
                params: dict) -> dict[str, list[str]]:
    """The texts of each role the form names (forget, retain, harmful, benign...): the named
    set's prompts, or every set but the partner role's for ALL_OTHERS_KEY (whose names then
    stand in ``params``); prompt + answer (``skill_texts``) for the roles the method probes that
    way when the form asks. Also "all": every loaded prompt. Sets ``params["with_answers"]`` to
    whether some text of an answered role carried an answer (the report says "answers probed"
    only then)."""
    from neurolens.methods.common import skill_texts
    rows = prompts.by_set()
    answered = spec.answered_roles if params.get("with_answers") else ()
    sets: dict[str, list[str]] = {}
    had_answer = False
    for role in spec.roles:
        name = params.get(role.name)
        if not isinstance(name, str):
            continue
        names = [name]
        if name == ALL_OTHERS_KEY and offers_all_others(role):
            names = [n for n in rows if n != params.get(role.differs_from)]
            params[role.name] = " + ".join(names)
        picked = [r for n in names for r in rows.get(n, [])]
        if role.name in answered:
            sets[role.name] = skill_texts(picked)
            had_answer = had_answer or any(r["answer"] for r in picked)
        else:
            sets[role.name] = [r["prompt"] for r in picked]
    sets["all"] = [p for _, p in prompts.rows]
    params["with_answers"] = had_answer
    return sets
