"""The paper protocols ``neurolens reproduce`` runs, as a registry.

An :class:`Experiment` names the model family it needs, the model it runs on by default, how it
runs (``run(model, limit=, log=, prompts_dir=) -> result dict``), how its result reads as a table
and, optionally, the rows of a before/after image grid (``--image``). The CLI looks experiments up
here and has no case of its own per family; a new protocol is one :func:`register` call in its
evals module, plus its name in :data:`BUILTIN` when it ships.

This module imports neither torch nor the protocols themselves: the CLI's parser reads
:data:`BUILTIN` without loading them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: shipped experiment -> the evals module that registers it (imported on first use)
BUILTIN = {"unlearning": "neurolens.evals.reproduce", "neurostrike": "neurolens.evals.reproduce",
           "sparsity": "neurolens.evals.reproduce", "memorization": "neurolens.evals.memorization",
           "delays": "neurolens.evals.delays", "attribution": "neurolens.evals.attribution"}


@dataclass(frozen=True)
class Experiment:
    id: str
    kind: str                                      # the model family it needs ("lm", ...)
    run: Callable[..., dict]                       # (model, *, limit, log, prompts_dir) -> dict
    format_table: Callable[[dict], str]
    #: the model it runs on when none is given: None is ``nl.load``'s default (the demo LM)
    default_model: Callable[[], Path] | None = None
    #: what to tell a user whose default model is missing
    missing_hint: str = ""
    #: (result, prompts_dir) -> (grid rows of images, one label per row), for ``--image``
    image_rows: Callable[[dict, Path | None], tuple[list[list], list[str]]] | None = None


_REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    _REGISTRY[exp.id] = exp
    return exp


def names() -> list[str]:
    """Every experiment: the shipped ones, then any registered since."""
    return list(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def get(name: str) -> Experiment:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        from neurolens.errors import InputError
        raise InputError(f"unknown experiment {name!r}; choose from {', '.join(names())}"
                         ) from None
