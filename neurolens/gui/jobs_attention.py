"""The Attention tab's jobs, Qt-free (see :mod:`neurolens.gui.jobs`): the per-head summaries
over prompts, one prompt's patterns and head-output norms at one layer (both read patterns with
eager attention, switched on only while they run), and the attribution of an answer to every
query head (the engine's ``attribute(..., per="head")`` on ``hook_z``)."""

from __future__ import annotations

import time

from neurolens.engine.events import BatchDone, Cancelled, Failed, Finished, Started
from neurolens.errors import Cancelled as CancelledError
from neurolens.errors import NeurolensError
from neurolens.gui.jobs import Context, Job, Progressed
from neurolens.gui.jobs_attribute import _streamed


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


def head_attribution(req, edits=None) -> Job:
    """Attribute ``req``'s metric (a per-head :class:`~neurolens.gui.presenters.attribute.
    AttributeRequest`, see :func:`neurolens.gui.presenters.attention.head_request`) to every
    query head; progress from exact patching, cancel between its batches. Finishes with
    ``{"result": Attribution, "seconds"}``."""
    def job(ctx: Context):
        from neurolens.engine.attribution import attribute
        m = _model(ctx)
        t0 = time.perf_counter()
        yield Started(0, "heads")
        try:
            res = yield from _streamed(
                lambda progress: attribute(m, req.prompts, req.answer, req.contrast, per="head",
                                           edits=edits, progress=progress, cancel=ctx.cancel,
                                           **req.kwargs()), ctx)
        except CancelledError:
            yield Cancelled()
            return
        yield Finished({"result": res, "seconds": time.perf_counter() - t0})
    return job
