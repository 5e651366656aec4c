"""The worker's attribution and dashboard jobs, Qt-free (see :mod:`neurolens.gui.jobs` for what a
job is): attribute an answer to the FFN neurons, patch the top K exactly, and read a neuron's
corpus dashboard from the loaded model's index.

The engine reports progress through a callback; an attribution job runs the engine call on a
helper thread and yields that progress as :class:`~neurolens.gui.jobs.Progressed` events while
it waits, so the worker forwards it like any job's. Cancel is the worker's token, which the
engine checks between batches of exact patching.
"""

from __future__ import annotations

import queue
import threading

from neurolens.engine.events import Cancelled, Failed, Finished, Started
from neurolens.errors import Cancelled as CancelledError
from neurolens.errors import NeurolensError
from neurolens.gui.jobs import Context, Job, Progressed, _needs_model


def _streamed(fn, ctx: Context):
    """Run ``fn(progress)`` on a helper thread; yield its progress as events; return its result
    (or raise its error). The helper inherits the worker thread's lower priority."""
    q: queue.Queue = queue.Queue()
    out: dict = {}

    def progress(done: int, total: int) -> None:
        q.put((int(done), int(total)))

    def target() -> None:
        try:
            out["result"] = fn(progress)
        except BaseException as e:  # noqa: BLE001 - handed to the job
            out["error"] = e
        finally:
            q.put(None)

    t = threading.Thread(target=target, name="neurolens-attribute", daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is None:
            break
        yield Progressed(*item)
    t.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def _check_lm(ctx: Context) -> None:
    _needs_model(ctx)
    if getattr(ctx.model, "kind", "lm") != "lm":
        raise NeurolensError("attribution works on language models")


def attribute(req, edits=None) -> Job:
    """Attribute ``req``'s metric (a :class:`~neurolens.gui.presenters.attribute.
    AttributeRequest`) to every neuron of its sites; the result is the engine's
    :class:`~neurolens.engine.attribution_result.Attribution`."""
    def job(ctx: Context):
        from neurolens.engine.attribution import attribute as run
        _check_lm(ctx)
        yield Started(0, "rows")
        try:
            res = yield from _streamed(
                lambda progress: run(ctx.model, req.prompts, req.answer, req.contrast,
                                     edits=edits, progress=progress, cancel=ctx.cancel,
                                     **req.kwargs()), ctx)
        except CancelledError:
            yield Cancelled()
            return
        yield Finished(res)
    return job


def verify(req, neurons: list[tuple[str, int]], edits=None) -> Job:
    """Exact activation patching of ``neurons`` (the top K of an attribution) under the same
    request; the result is an exact-method Attribution scoring only those neurons."""
    def job(ctx: Context):
        from neurolens.engine.attribution import attribute as run
        _check_lm(ctx)
        chosen: dict[str, list[int]] = {}
        for s, n in neurons:
            chosen.setdefault(s, []).append(int(n))
        kw = req.kwargs()
        kw.update(method="exact", sites=list(chosen))
        yield Started(len(neurons), "neurons")
        try:
            res = yield from _streamed(
                lambda progress: run(ctx.model, req.prompts, req.answer, req.contrast,
                                     neurons=chosen, edits=edits, progress=progress,
                                     cancel=ctx.cancel, **kw), ctx)
        except CancelledError:
            yield Cancelled()
            return
        yield Finished(res)
    return job


# -- dashboards ----------------------------------------------------------------------------------
_OPEN: dict[int, tuple[object, object]] = {}      # id(model) -> (model, its NeuronIndex)


def _index_for(model):
    """The loaded model's index (opened once per model), or None when there is none."""
    got = _OPEN.get(id(model))
    if got is not None and got[0] is model:
        return got[1]
    from neurolens.engine.neuron_index import NeuronIndex, find_index
    folder = find_index(model)
    if folder is None:
        return None                 # looked for again next time: an index may be built meanwhile
    idx = NeuronIndex.open(folder, model)
    _OPEN.clear()
    _OPEN[id(model)] = (model, idx)
    return idx


def dashboard(site: str, neuron: int, k: int = 12) -> Job:
    """One neuron's corpus dashboard: ``{"dashboard": Dashboard, "folder": str}``, or
    ``{"missing": model name}`` when no index exists for the loaded weights, or ``{"error":
    message}`` (an index that cannot be read, a site it does not cover)."""
    def job(ctx: Context):
        if ctx.model is None or getattr(ctx.model, "kind", "lm") != "lm":
            yield Finished({"skip": True})
            return
        try:
            idx = _index_for(ctx.model)
            if idx is None:
                yield Finished({"missing": str(ctx.model.name_or_path)})
                return
            if site not in idx.sites:
                yield Finished({"error": f"the index covers {', '.join(idx.sites[:2])}"
                                         f"{', …' if len(idx.sites) > 2 else ''}, not {site}"})
                return
            d = idx.dashboard(site, int(neuron), k=k, model=ctx.model)
        except NeurolensError as e:
            yield Finished({"error": str(e)})
            return
        except ImportError:
            yield Finished({"error": "this build has no neuron index support"})
            return
        except Exception as e:  # noqa: BLE001 - shown in the dashboard, the app keeps running
            yield Failed(e)
            return
        yield Finished({"dashboard": d, "folder": str(idx.folder), "site": site,
                        "neuron": int(neuron)})
    return job
