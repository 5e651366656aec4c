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
from neurolens.errors import InputError as NeurolensInput
from neurolens.errors import NeurolensError
from neurolens.gui.jobs import Context, Job, Progressed, Update, _needs_model


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


def _opener(prompt: str) -> str:
    """A prompt's template opener: up to its first ':' when that comes early ("Compute:",
    "Story:", "User:"), else its first word ("def")."""
    head = prompt.lstrip()
    k = head.find(":")
    return head[:k + 1] if 0 < k <= 12 else (head.split() or [""])[0]


def skill_probe(prompts: list[str]) -> tuple[list[str], str] | None:
    """The probe split of the prompts' skill, which the CLI's mean ablation averages over for a
    skill's prompt file: the shipped skills whose probe prompts open like every one of
    ``prompts`` (both near-miss skills for "User:"). ``(prompts, where)``, or None when no
    skill fits."""
    from neurolens.evals.skills import SKILLS, load_prompt_set
    openers = {_opener(p) for p in prompts}
    if "" in openers:
        return None
    hit, got = [], []
    for skill in SKILLS:
        try:
            probe = [r["prompt"] for r in load_prompt_set(skill, "probe")]
        except NeurolensError:
            continue
        if openers <= {_opener(p) for p in probe}:
            hit.append(skill)
            got += probe
    if not got:
        return None
    name = f"{hit[0]} skill's" if len(hit) == 1 else f"{' + '.join(hit)} skills'"
    return got, f"the {name} probe split ({len(got)} prompts)"


def attribute(req, edits=None, skill_mean: bool = False) -> Job:
    """Attribute ``req``'s metric (a :class:`~neurolens.gui.presenters.attribute.
    AttributeRequest`) to every neuron of its sites; the result is the engine's
    :class:`~neurolens.engine.attribution_result.Attribution`. ``skill_mean`` (typed prompts,
    mean ablation): average over the probe split of the prompts' skill where one fits (sent
    first as ``Update({"mean_prompts", "mean_over"})``), as the CLI does."""
    def job(ctx: Context):
        from dataclasses import replace

        from neurolens.engine.attribution import attribute as run
        nonlocal req
        _check_lm(ctx)
        yield Started(0, "rows")
        if skill_mean and req.ablate == "mean":
            got = skill_probe(list(req.prompts))
            if got is not None:
                req = replace(req, mean_prompts=got[0])
                yield Update({"mean_prompts": got[0], "mean_over": got[1]})
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


def _not_lm(ctx: Context) -> bool:
    """No language model loaded: the dashboard and the build bar have nothing to show."""
    return ctx.model is None or getattr(ctx.model, "kind", "lm") != "lm"


def dashboard(site: str, neuron: int, k: int = 12) -> Job:
    """One neuron's corpus dashboard: ``{"dashboard": Dashboard, "folder": str}``, or
    ``{"missing": model name}`` when no index exists for the loaded weights, or ``{"error":
    message}`` (an index that cannot be read, a site it does not cover)."""
    def job(ctx: Context):
        if _not_lm(ctx):
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


# -- building an index ---------------------------------------------------------------------------
def forget_index() -> None:
    """Drop the opened index, so that the next dashboard looks for one again (after a build)."""
    _OPEN.clear()


def _sources(folder, entries: list[dict]) -> list[str]:
    from neurolens.engine.neuron_index.corpus import source_path
    return [str(source_path(e, folder)) for e in entries]


def _user_index(model) -> dict:
    """The state of the index "Build index" writes for ``model`` (the user-data folder, keyed by
    the weights digest): ``state`` none | partial | complete, the documents and tokens it holds,
    the documents its corpus has, its sources. Raises a one-line InputError for a folder the
    build would refuse (an index of other weights, a newer format)."""
    from neurolens.engine.neuron_index import files, user_index_dir, weights_digest
    from neurolens.engine.neuron_index.corpus import Source
    from neurolens.engine.neuron_index.index import any_user_index
    out = {"folder": "", "state": "none", "n_docs": 0, "n_tokens": 0, "total_docs": 0,
           "sources": []}
    if not any_user_index(model):       # no digest to compute (seconds at 8B): nothing to find
        return out
    folder = user_index_dir(model)
    out["folder"] = str(folder)
    if not (folder / files.MANIFEST).is_file():
        return out
    manifest = files.read_manifest(folder)          # refuses a newer format
    digest = weights_digest(model)
    if manifest.get("digest") != digest:
        raise NeurolensInput(f"the index at {folder} was built for other weights (digest "
                             f"{str(manifest.get('digest'))[:12]}, this model {digest[:12]}); "
                             "move it away and build again")
    latest = files.latest_state(folder)
    meta = latest[1] if latest else {"n_docs": 0, "n_tokens": 0,
                                     "sources": manifest.get("sources", [])}
    entries = list(meta["sources"])
    out.update(n_docs=int(meta["n_docs"]), n_tokens=int(meta["n_tokens"]),
               sources=_sources(folder, entries))
    # what the last finished chunk holds of each source (none before the first chunk)
    out["indexed"] = list(zip(out["sources"], (int(e["n_docs"]) for e in entries))) \
        if latest else []
    total = 0
    for e, path in zip(entries, out["sources"]):
        try:
            total += Source(path, e.get("kind", "")).count()
        except NeurolensError:
            total += int(e.get("n_docs", 0))        # a corpus that is gone: nothing to resume
    out["total_docs"] = total
    out["state"] = "partial" if out["n_docs"] < total or not latest else "complete"
    return out


def _default_corpus(model) -> list[str]:
    """The corpus offered first: that of the index shipped beside the model (the demo model's:
    its prompt sets and a sample of its training text), when its files are there."""
    from pathlib import Path

    from neurolens.engine.neuron_index import files
    src = Path(str(getattr(model, "name_or_path", "") or ""))
    folder = src / "index"
    if not str(src) or not (folder / files.MANIFEST).is_file():
        return []
    try:
        entries = files.read_manifest(folder).get("sources", [])
    except NeurolensError:
        return []
    paths = _sources(folder, entries)
    return paths if paths and all(Path(p).exists() for p in paths) else []


def index_status() -> Job:
    """What the dashboard's build bar shows: :func:`_user_index`'s dict plus ``default`` (the
    corpus offered first) and ``found`` (the folder of the index the dashboards read, if any);
    ``{"error": message}`` for a user index the build would refuse."""
    def job(ctx: Context):
        if _not_lm(ctx):
            yield Finished({"skip": True})
            return
        from neurolens.engine.neuron_index import find_index
        try:
            out = _user_index(ctx.model)
        except NeurolensError as e:
            out = {"error": str(e), "state": "none"}
        out["default"] = _default_corpus(ctx.model)
        found = find_index(ctx.model)
        out["found"] = str(found) if found is not None else None
        yield Finished(out)
    return job


def _plan_tokens(model, have: dict, paths: list[str], cancel) -> tuple[list[str], list[int]]:
    """The sources a build reads (the index's own, then the new ones, as the engine numbers
    them) and the token count of every document it will add, in order. Reading every document
    first also refuses a corpus that is not text before anything is written."""
    from pathlib import Path

    from neurolens.engine.neuron_index.corpus import Source
    indexed = have.get("indexed", [])
    entries = [p for p, _ in indexed]
    seen = {Path(p).resolve() for p in entries}
    for p in list(have["sources"]) + paths:
        if Path(p).resolve() not in seen:
            seen.add(Path(p).resolve())
            entries.append(p)
    counts: list[int] = []
    batch: list[str] = []

    def flush():
        if batch:
            if cancel.cancelled:
                raise CancelledError("index build cancelled")
            counts.extend(len(x) for x in model.tokenizer(batch)["input_ids"])
            batch.clear()
    n_old = len(indexed)
    for i, p in enumerate(entries):
        if i < n_old - 1:
            continue                # the engine reads only the last indexed source again
        skip = indexed[i][1] if i < n_old else 0
        for j, text in enumerate(Source(p).docs()):
            if j >= skip:
                batch.append(text)
                if len(batch) >= 256:
                    flush()
    flush()
    return entries, counts


def build(corpus: list[str] | None = None, chunk_docs: int = 256, batch_size: int = 16) -> Job:
    """Build (or resume, or extend with ``corpus``) the loaded model's index in the user-data
    folder where the dashboards find it. Progress counts tokens (``Started(total tokens)``,
    then ``Progressed(tokens indexed, total)``, the tokens already indexed first); cancel keeps
    every finished chunk. The result: ``{"n_docs", "n_tokens", "folder", "seconds"}``, or
    ``{"error": one line}`` for bad input (nothing written)."""
    def job(ctx: Context):
        import time

        from neurolens.engine.neuron_index import build_index, user_index_dir
        _check_lm(ctx)
        model = ctx.model
        yield Started(0, "tokens")
        try:
            have = _user_index(model)
            paths, counts = _plan_tokens(model, have, list(corpus or []), ctx.cancel)
            if not paths:
                raise NeurolensInput("choose a corpus: a text file, a JSONL file or a folder")
        except CancelledError:
            yield Cancelled()
            return
        except NeurolensError as e:
            yield Finished({"error": str(e)})
            return
        base_docs, base_tokens = have["n_docs"], have["n_tokens"]
        cum = [base_tokens]
        for c in counts:
            cum.append(cum[-1] + c)
        total = cum[-1]

        def tokens(docs: int) -> int:
            return cum[max(0, min(len(cum) - 1, docs - base_docs))]
        yield Started(total, "tokens")
        yield Progressed(base_tokens, total)
        t0 = time.perf_counter()
        steps = _streamed(lambda progress: build_index(
            model, paths, user_index_dir(model), chunk_docs=chunk_docs, batch_size=batch_size,
            progress=progress, cancel=ctx.cancel), ctx)
        try:
            while True:
                ev = next(steps)
                yield Progressed(tokens(ev.done), total)
        except StopIteration as stop:
            idx = stop.value
        except CancelledError:
            forget_index()
            yield Cancelled()
            return
        except NeurolensError as e:
            forget_index()
            yield Finished({"error": str(e)})
            return
        forget_index()
        yield Finished({"n_docs": idx.n_docs, "n_tokens": idx.n_tokens,
                        "folder": str(idx.folder), "seconds": time.perf_counter() - t0})
    return job
