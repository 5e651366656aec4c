"""The Attention tab's jobs, Qt-free (see :mod:`neurolens.gui.jobs`): the per-head summaries
over prompts, and one prompt's patterns and head-output norms at one layer. Both read
patterns with eager attention, switched on only while they run."""

from __future__ import annotations

import time

from neurolens.engine.events import BatchDone, Cancelled, Failed, Finished, Started
from neurolens.errors import NeurolensError
from neurolens.gui.jobs import Context, Job, Progressed


def _model(ctx: Context):
    if ctx.model is None:
        raise NeurolensError("no model loaded")
    if ctx.model.kind != "lm":
        raise NeurolensError("attention heads: language models only")
    return ctx.model


def head_summaries(prompts, set_names, edits=None, induction_len: int = 20,
                   induction_n: int = 4, seed: int = 0) -> Job:
    """Per-head summaries (:func:`neurolens.engine.head_summary.head_summary_events`);
    finishes with ``{"summary", "seconds", "n_edits"}``."""
    def job(ctx: Context):
        from neurolens.engine.head_summary import head_summary_events
        m = _model(ctx)
        t0 = time.perf_counter()
        for ev in head_summary_events(m, list(prompts), list(set_names), edits=edits,
                                      induction_len=induction_len, induction_n=induction_n,
                                      seed=seed, cancel=ctx.cancel):
            if isinstance(ev, Started):
                yield ev
            elif isinstance(ev, BatchDone):
                yield Progressed(ev.done, ev.total)
            elif isinstance(ev, Finished):
                yield Finished({"summary": ev.result, "seconds": time.perf_counter() - t0,
                                "n_edits": len(edits) if edits is not None else 0})
                return
            elif isinstance(ev, (Cancelled, Failed)):
                yield ev
                return
    return job


def head_pattern(prompt: str, layer: int, edits=None) -> Job:
    """One prompt's patterns of every head of ``layer`` and their output norms per token
    (:func:`neurolens.engine.head_summary.head_detail`)."""
    def job(ctx: Context):
        from neurolens.engine.head_summary import head_detail
        m = _model(ctx)
        yield Finished(head_detail(m, prompt, layer, edits=edits, cancel=ctx.cancel))
    return job
