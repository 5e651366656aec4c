"""The registry of paper methods: what the CLI's ``fit``, the GUI's Methods panel, the worker
and ``reproduce`` know about a method, in one place.

A method module registers one :class:`MethodSpec`: its id (``neuron-adjust``, the CLI name), its
title (the GUI's), the model kinds it applies to, the prompt-set roles it fits on (and which of
them it probes as prompt + answer), a params dataclass (defaults, help, choices in the fields'
metadata) and ``fit(model, sets, params, **run) -> MethodResult``. A :class:`MethodResult` holds
the edits, a report (``summary()`` for people, ``to_json()`` for files) and the neurons it
selected; it unpacks as ``(edits, report)``, the shape the methods' own ``fit`` functions return.

A new method is one module that calls :func:`register`; the built-in ones are imported by
:func:`all_methods` (and so by every front-end) through ``neurolens.methods``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from neurolens.errors import InputError
from neurolens.spec.edits import EditSet
from neurolens.spec.kinds import KIND_WORDS

#: the built-in method modules (imported on first use of the registry)
BUILTIN = ("neuron_adjust", "key_space", "neurostrike", "statistical_topk", "memorization")


@dataclass(frozen=True)
class Role:
    """A prompt set a method fits on."""

    name: str                  # "forget", "retain", ...: the CLI flag and the GUI field
    help: str
    answered: bool = False     # probed as prompt + answer (``skill_texts``) by default
    many: bool = False         # several files / sets may be given
    required: bool = True
    differs_from: str | None = None   # must be another set than this role's
    needed_if: tuple[str, Any] | None = None   # (param, value): needed when params say so

    def needed(self, params) -> bool:
        """Whether a fit with ``params`` (the dataclass or a dict) needs this set."""
        if self.required:
            return True
        if self.needed_if is None:
            return False
        name, value = self.needed_if
        got = params.get(name) if isinstance(params, dict) else getattr(params, name, None)
        return got == value


@dataclass
class MethodResult:
    """What a fit gives: edits, a report, the neurons selected (site, index)."""

    edits: EditSet
    report: Any
    neurons: list[tuple[str, int]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # method-specific results (e.g. "inside")

    def __iter__(self):          # edits, report = method.fit(...)
        return iter((self.edits, self.report))

    def __getitem__(self, i):    # result[0], result[1]: the tuple these fits returned
        return (self.edits, self.report)[i]

    def __len__(self) -> int:
        return 2

    def summary(self) -> str:
        return self.report.summary()


def param(default, help: str = "", choices=None, label: str = "", form=None):
    """A params dataclass field with its help text (and the values it accepts). ``form``: the
    value the GUI's Methods form starts from when it differs from the API's default."""
    return field(default=default, metadata={"help": help, "choices": choices, "label": label,
                                            "form": form})


@dataclass(frozen=True)
class MethodSpec:
    id: str
    title: str
    kinds: tuple[str, ...]
    roles: tuple[Role, ...]
    params: type                       # a dataclass; ``check()`` (optional) validates it
    fit: Callable[..., MethodResult]   # (model, sets, params, *, progress, cancel, shown)
    summary: str = ""                  # one line for listings (``fit --help``)
    #: (result, set names per role) -> text; default: the report's summary
    summarize: Callable[[MethodResult, dict], str] | None = None

    def describe(self, result: MethodResult, names: dict[str, str] | None = None) -> str:
        """One paragraph on a fit for people (the GUI's report line); ``names``: the prompt
        sets' names per role, for reports that mention them."""
        return self.summarize(result, names or {}) if self.summarize else result.summary()

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)

    @property
    def answered_roles(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles if r.answered)

    def param_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.params))

    def make_params(self, values: dict | None = None):
        """The params dataclass from ``values`` (unknown keys are ignored), checked."""
        fields = {f.name: f for f in self.param_fields()}
        kw = {}
        for k, v in (values or {}).items():
            f = fields.get(k)
            if f is None:
                continue
            kind = type(f.default)
            if isinstance(v, str) and kind in (int, float):   # a CLI flag shared by methods
                try:
                    v = kind(v)
                except ValueError:
                    raise InputError(f"{k} takes a number, not {v!r}") from None
            kw[k] = v
        p = self.params(**kw)
        check = getattr(p, "check", None)
        if check is not None:
            check()
        return p

    def check_model(self, model) -> None:
        kind = getattr(model, "kind", "")
        if kind not in self.kinds:
            where = " and ".join(KIND_WORDS.get(k, k) + "s" for k in self.kinds)
            is_a = KIND_WORDS.get(kind, kind)
            raise InputError(f"{self.title} applies to {where}; the loaded model is a {is_a}")

    def run(self, model, sets: dict[str, list[str]], params=None, *, progress=None,
            cancel=None, shown: list[str] | None = None) -> MethodResult:
        """Check the model and the sets, then fit. ``sets`` maps role -> texts (already
        prompt + answer where the caller probes answers); ``shown``: the prompts on screen,
        for methods that report on them."""
        self.check_model(model)
        params = params if params is not None and not isinstance(params, dict) \
            else self.make_params(params)
        for r in self.roles:
            if r.needed(params) and not sets.get(r.name):
                raise InputError(f"{self.title} needs the '{r.name}' prompt set ({r.help})")
        return self.fit(model, sets, params, progress=progress, cancel=cancel, shown=shown)


_METHODS: dict[str, MethodSpec] = {}
_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.id] = spec
    return spec


def unregister(method_id: str) -> None:
    _METHODS.pop(method_id, None)


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        import importlib
        for m in BUILTIN:
            importlib.import_module(f"neurolens.methods.{m}")
        _loaded = True


def all_methods() -> list[MethodSpec]:
    _load_builtin()
    return list(_METHODS.values())


def get(name: str) -> MethodSpec:
    """A method by id (``key-space``) or title (``Key Space Detection``)."""
    _load_builtin()
    for s in _METHODS.values():
        if name in (s.id, s.title):
            return s
    raise InputError(f"unknown method '{name}' (known: {', '.join(_METHODS)})")


def for_kind(kind: str) -> list[MethodSpec]:
    return [s for s in all_methods() if kind in s.kinds]


def different_sets_error(a: str, b: str) -> str:
    return f"{a} and {b} must be different prompt sets"
