"""The events every run yields, whatever the model family.

A run (capture, generation, denoising) is a generator: ``Started`` first, then progress events,
then exactly one of ``Finished(result)``, ``Cancelled(partial)`` or ``Failed(error)``. Progress
events carry ``done`` and ``total`` in the run's own unit (prompts for a language model,
denoising steps for a pipeline). :func:`drain` consumes a run for the blocking API: it reports
progress, returns the result, and raises :class:`neurolens.errors.Cancelled` or the run's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable

import numpy as np

from neurolens.errors import Cancelled as CancelledError


@dataclass
class Started:
    total: int           # units of work the run will report
    unit: str            # "prompts" | "steps"


class Progress:
    """Base of the events that advance a run: ``done`` of ``total`` units."""

    done: int
    total: int


@dataclass
class PromptProcessed(Progress):
    """Language model: a batch of prompts went through the prefill."""

    prompt_indices: list[int]
    done: int
    total: int


@dataclass
class TokenAppended:
    """Language model: one decoding step of a batch (not progress: rows finish unevenly)."""

    step: int
    prompt_indices: list[int]
    token_ids: list[int | None]    # None for rows that had already finished
    texts: list[str | None]


@dataclass
class BatchDone(Progress):
    """Language model: a batch of plain forwards (capture, scoring) finished."""

    prompt_indices: list[int]
    done: int
    total: int
    extra: dict = field(default_factory=dict)   # per-batch op results (e.g. gate abstentions)


@dataclass
class StepDone(Progress):
    """Diffusion pipeline: one denoising step of a batch."""

    step: int
    n_steps: int
    preview: np.ndarray | None = None     # [batch, H, W, C] in 0..1 (predicted clean image)

    @property
    def done(self) -> int:       # type: ignore[override]
        return self.step + 1

    @property
    def total(self) -> int:      # type: ignore[override]
        return self.n_steps


@dataclass
class Finished:
    result: Any          # the family's output: generation outputs, images, [] for capture


@dataclass
class Cancelled:
    partial: Any = None  # what was produced before the cancel (None when nothing is usable)
    at: int | None = None    # the step or prompt the run stopped before


@dataclass
class Failed:
    error: BaseException


END = (Finished, Cancelled, Failed)


def drain(events: Iterable, progress: Callable[[int, int], Any] | None = None,
          what: str = "run") -> Any:
    """Run ``events`` to the end: report progress, return ``Finished.result``; raise
    :class:`neurolens.errors.Cancelled` on a cancel and the run's own error on a failure."""
    for ev in events:
        if isinstance(ev, Finished):
            return ev.result
        if isinstance(ev, Failed):
            raise ev.error
        if isinstance(ev, Cancelled):
            where = f" at step {ev.at}" if ev.at is not None else ""
            raise CancelledError(f"{what} cancelled{where}")
        if progress is not None and isinstance(ev, Progress):
            progress(ev.done, ev.total)
    raise RuntimeError(f"the {what} ended without a result")   # pragma: no cover - a bug
