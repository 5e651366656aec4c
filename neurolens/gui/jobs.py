"""The worker's jobs, Qt-free: each is a function of the worker's :class:`Context` (the loaded
model and the cancel flag) that yields engine events.

A job yields ``Started(total, unit)`` where it has a size, then any number of
:class:`Progressed` and :class:`Update` (a partial result for the views: the texts generated so
far, a preview image), and ends with exactly one ``Finished(result)``, ``Cancelled()`` or
``Failed(error)``, like every engine run (:mod:`neurolens.engine.events`). The worker
(:class:`neurolens.gui.worker.Worker`) runs one job at a time on its thread and forwards these
as a few signals, throttled to the display rate; it knows nothing of what a job does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from typing import Any

from neurolens.engine.events import Cancelled, Failed, Finished, PromptProcessed, Started
from neurolens.engine.events import TokenAppended
from neurolens.engine.hooks import CancelToken
from neurolens.errors import NeurolensError
from neurolens.spec.run import RunSpec
from neurolens.spec.sites import site_name
from neurolens.store import CaptureStore


@dataclass
class Progressed:
    done: int
    total: int


@dataclass
class Update:
    """A partial result for the views (coalesced: only the latest one between two notices is
    sent)."""

    payload: Any


@dataclass
class Context:
    """What jobs share on the worker thread."""

    model: Any = None
    cancel: CancelToken = field(default_factory=CancelToken)


Job = Callable[[Context], Iterator]


def describe_error(e: BaseException) -> str:
    if isinstance(e, NeurolensError):
        return str(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


def _needs_model(ctx: Context) -> None:
    if ctx.model is None:
        raise NeurolensError("no model loaded")


# -- loading -----------------------------------------------------------------------------------
def _before_after(ctx: Context, req, one_pass, store: CaptureStore, base: CaptureStore,
                  per: int, unit: str):
    """What every compare job shares: the baseline pass (no edits) into ``base``, then the
    edited pass into ``store``, with one progress bar over both. ``one_pass(ctx, req, edits,
    store, offset, total)`` returns ("finished" | "cancelled" | "failed", payload). Returns
    ``(before, after)``, or None once it has yielded the Cancelled / Failed event."""
    _needs_model(ctx)
    yield Started(2 * per, unit)
    st, before = yield from one_pass(ctx, req, None, base, 0, 2 * per)
    after = before
    if st == "finished":
        st, after = yield from one_pass(ctx, req, req.edits, store, per, 2 * per)
    if st == "cancelled":
        yield Cancelled()
        return None
    if st == "failed":
        yield Failed(after)
        return None
    return before, after


def model_info(m) -> dict:
    """What the window shows of a loaded model (plain data)."""
    info = {"name": m.name_or_path, "kind": m.kind, "model_type": m.model_type,
            "n_layers": m.n_layers, "n_params": m.n_params(), "sites": m.sites(),
            "notes": list(m.notes), "fingerprint": m.fingerprint, "device": str(m.device)}
    if m.kind == "diffusion":
        info["site_list"] = list(m.sites())
        info["aliases"] = m.aliases()
        info["image_size"] = m.image_size
    if m.kind == "snn":
        from neurolens.engine.snn.views import sample_files
        info.update(class_names=m.class_names, n_inputs=m.n_inputs,
                    layer_sizes=list(m.cfg.layer_sizes), delays=m.cfg.delays,
                    max_delay=int(m.max_delay), kernel_size=int(m.cfg.effective_kernel),
                    sample_files={k: str(v) for k, v in sample_files(m).items()})
    return info


def load(name: str) -> Job:
    def job(ctx: Context):
        from neurolens.engine.loading import load as load_model
        ctx.model = load_model(name or None)
        yield Finished(model_info(ctx.model))
    return job


# -- language models ---------------------------------------------------------------------------
def _generate(ctx: Context, req: RunSpec, edits, store: CaptureStore, offset: int, total: int):
    """One generation pass streaming into ``store``; yields progress and the texts so far,
    returns ("finished", outputs) | ("cancelled", None) | ("failed", error)."""
    m = ctx.model
    store.clear()
    sites = [site_name(layer, k) for k in req.site_kinds for layer in range(m.n_layers)]
    texts: dict[int, str] = {}
    done = 0
    for ev in m.generate_events(list(req.prompts), edits=edits, params=req.generation,
                                cancel=ctx.cancel, capture_sites=sites, store=store,
                                set_names=list(req.set_names)):
        if isinstance(ev, TokenAppended):
            for i, t in zip(ev.prompt_indices, ev.texts):
                if t is not None:
                    texts[i] = texts.get(i, "") + t
                    store.add_tokens(i, [t])
            done += len(ev.prompt_indices)
        elif isinstance(ev, PromptProcessed):
            for i in ev.prompt_indices:
                texts.setdefault(i, "")
        if isinstance(ev, Finished):
            for i, o in enumerate(ev.result):
                if o.abstained:
                    texts[i] = o.text
            yield Progressed(min(offset + done, total), total)
            yield Update(dict(texts))
            return "finished", ev.result
        if isinstance(ev, Cancelled):
            return "cancelled", None
        if isinstance(ev, Failed):
            return "failed", ev.error
        yield Progressed(min(offset + done, total), total)
        yield Update(dict(texts))
    return "failed", RuntimeError("the run ended without a result")


def generate(req: RunSpec, store: CaptureStore) -> Job:
    """Run the request's prompts with its edits; the texts stream as updates."""
    def job(ctx: Context):
        _needs_model(ctx)
        total = len(req.prompts) * max(1, req.generation.max_new_tokens)
        yield Started(total, "tokens")
        t0 = time.perf_counter()
        status, outs = yield from _generate(ctx, req, req.edits, store, 0, total)
        if status == "cancelled":
            yield Cancelled()
        elif status == "failed":
            yield Failed(outs)
        else:
            yield Finished({"outputs": [o.text for o in outs], "tokens": [o.tokens for o in outs],
                            "logprobs": [o.logprobs for o in outs],
                            "abstained": [o.abstained for o in outs],
                            "seconds": time.perf_counter() - t0})
    return job


def compare_generations(req: RunSpec, store: CaptureStore, base: CaptureStore) -> Job:
    """Baseline (into ``base``) then edited (into ``store``), same seed and settings; each
    prompt's outputs side by side and the answered sets' scores before and after."""
    def job(ctx: Context):
        from neurolens.engine.runner import first_divergence
        from neurolens.evals.scoring import set_scores
        t0 = time.perf_counter()
        per = len(req.prompts) * max(1, req.generation.max_new_tokens)
        both = yield from _before_after(ctx, req, _generate, store, base, per, "tokens")
        if both is None:
            return
        before, after = both
        items = []
        for i, (b, e) in enumerate(zip(before, after)):
            items.append({"prompt": req.prompts[i], "set": req.set_names[i],
                          "base_text": b.text, "edit_text": e.text,
                          "base_tokens": b.tokens, "edit_tokens": e.tokens,
                          "base_logprobs": b.logprobs, "edit_logprobs": e.logprobs,
                          "first_divergence": first_divergence(b.token_ids, e.token_ids),
                          "changed": b.token_ids != e.token_ids, "abstained": e.abstained})
        metrics = set_scores(req.set_names, req.answers, [o.text for o in before],
                             [o.text for o in after])
        yield Finished({"items": items, "metrics": metrics, "seed": req.generation.seed,
                        "n_edits": len(req.edits) if req.edits is not None else 0,
                        "seconds": time.perf_counter() - t0})
    return job


# -- diffusion pipelines -----------------------------------------------------------------------
def _denoise(ctx: Context, req: RunSpec, edits, store: CaptureStore, offset: int, total: int):
    """One denoising pass streaming per-step FFN means into ``store`` and previews out
    (updates ``(step, images)``); returns ("finished", images) | ("cancelled", None)."""
    from neurolens.engine.diffusion import StepCapture, StepDone
    m = ctx.model
    store.clear()
    for i, (p, s) in enumerate(zip(req.prompts, req.set_names)):
        store.set_prompt(i, p, s)
    caps = {site: StepCapture(site, store, "mean") for site in m.sites()}
    d = req.denoise
    for ev in m.denoise_events(list(req.prompts), edits=edits, captures=caps, steps=d.steps,
                               guidance=d.guidance, seed=d.seed, cancel=ctx.cancel,
                               preview=True):
        if isinstance(ev, Finished):
            yield Progressed(offset + d.steps, total)
            return "finished", ev.result.images
        if isinstance(ev, Cancelled):
            return "cancelled", None
        if isinstance(ev, Failed):
            raise ev.error
        if isinstance(ev, StepDone):
            yield Progressed(offset + ev.step + 1, total)
            yield Update((ev.step, ev.preview))
    return "cancelled", None


def denoise(req: RunSpec, store: CaptureStore) -> Job:
    """Denoise the request's prompts with its edits; previews stream as updates."""
    def job(ctx: Context):
        _needs_model(ctx)
        n = req.denoise.steps
        yield Started(n, "steps")
        t0 = time.perf_counter()
        st, images = yield from _denoise(ctx, req, req.edits, store, 0, n)
        if st == "cancelled":
            yield Cancelled()
            return
        yield Update((n, images))
        yield Finished({"images": images, "outputs": [""] * len(images),
                        "seconds": time.perf_counter() - t0})
    return job


def compare_images(req: RunSpec, store: CaptureStore, base: CaptureStore) -> Job:
    """Baseline then edited images, same seeds; their per-image mean absolute difference."""
    def job(ctx: Context):
        import numpy as np
        t0 = time.perf_counter()
        n = req.denoise.steps
        both = yield from _before_after(ctx, req, _denoise, store, base, n, "steps")
        if both is None:
            return
        before, after = both
        diff = np.abs(after - before)
        yield Update((n, after))
        yield Finished({"diffusion": True, "before": before, "after": after, "diff": diff,
                        "prompts": list(req.prompts), "seed": req.denoise.seed,
                        "mean_abs_diff": [float(x.mean()) for x in diff],
                        "n_edits": len(req.edits) if req.edits is not None else 0,
                        "seconds": time.perf_counter() - t0})
    return job


# -- spiking networks -------------------------------------------------------------------------
def read_samples(path: str, n: int | None = None) -> Job:
    """A sample file (safetensors or SHD .h5) checked against the loaded network: its first
    ``n`` samples as ``{"spikes", "labels", "path"}``."""
    def job(ctx: Context):
        _needs_model(ctx)
        s = ctx.model.samples(path)
        k = len(s) if n is None else min(len(s), int(n))
        yield Finished({"spikes": s.spikes[:k], "labels": None if s.labels is None
                        else s.labels[:k], "path": str(path)})
    return job


def snn_overview(health_set: str | None) -> Job:
    """The network's synapses (weights, delays, kernels per layer), the task's class templates
    where it has them, and the dead / saturated neurons on ``health_set`` (a sample file)."""
    def job(ctx: Context):
        from neurolens.engine.snn.views import neuron_health, overview
        _needs_model(ctx)
        ov = overview(ctx.model)
        ov["templates"] = None
        if ov.get("task"):
            from neurolens.evals.spike_motifs import MotifTask
            try:
                tpl = MotifTask.from_json(ov["task"]).templates()
                if tpl.shape[1] == ov["n_inputs"]:
                    ov["templates"] = tpl
            except (TypeError, ValueError):
                pass
        ov["health"] = neuron_health(ctx.model, health_set) if health_set else {}
        yield Finished(ov)
    return job


def snn_synapses(edits, health_set: str | None = None) -> Job:
    """Every layer's synapses as the enabled synapse and delay ops of ``edits`` leave them, and
    (with ``health_set``, a sample file, and edits) the dead / saturated neurons under them."""
    def job(ctx: Context):
        from neurolens.engine.snn.views import neuron_health, synapses
        _needs_model(ctx)
        layers = [synapses(ctx.model, layer, edits) for layer in range(ctx.model.n_layers)]
        health = (neuron_health(ctx.model, health_set, edits)
                  if health_set and edits is not None and len(edits) else None)
        yield Finished({"layers": layers, "health": health})
    return job


def _classify(ctx: Context, req, edits, store: CaptureStore, offset: int, total: int):
    """One classification streaming every layer's bins into ``store``; returns ("finished",
    SNNOutput) | ("cancelled", None)."""
    from neurolens.engine.events import BatchDone
    from neurolens.engine.snn.views import classify_into
    for ev in classify_into(ctx.model, req.spikes, req.labels, list(req.prompts),
                            list(req.set_names), store, edits=edits, cancel=ctx.cancel):
        if isinstance(ev, BatchDone):
            yield Progressed(offset + ev.done, total)
            yield Update(ev.done)
        elif isinstance(ev, Finished):
            return "finished", ev.result
        elif isinstance(ev, Cancelled):
            return "cancelled", None
        elif isinstance(ev, Failed):
            raise ev.error
    return "cancelled", None


def _classes(out) -> dict:
    return {"outputs": [out.class_names[k] for k in out.predictions],
            "predictions": out.predictions, "labels": out.labels, "probs": out.probs,
            "class_names": out.class_names, "accuracy": out.accuracy,
            "per_class": out.per_class_accuracy()}


def classify(req, store: CaptureStore) -> Job:
    """Classify the request's samples with its edits; every layer's bins stream into the store
    batch by batch (the rasters fill in sample order)."""
    def job(ctx: Context):
        _needs_model(ctx)
        n = len(req.prompts)
        yield Started(n, "samples")
        t0 = time.perf_counter()
        st, out = yield from _classify(ctx, req, req.edits, store, 0, n)
        if st == "cancelled":
            yield Cancelled()
            return
        yield Finished({**_classes(out), "seconds": time.perf_counter() - t0})
    return job


def compare_samples(req, store: CaptureStore, base: CaptureStore) -> Job:
    """Baseline (into ``base``) then edited (into ``store``): accuracy per class before and
    after (the engine's :class:`SNNComparison`), predictions and probabilities of both."""
    def job(ctx: Context):
        from neurolens.engine.snn.model import SNNComparison
        t0 = time.perf_counter()
        both = yield from _before_after(ctx, req, _classify, store, base, len(req.prompts),
                                        "samples")
        if both is None:
            return
        before, after = both
        r = SNNComparison(before, after).to_json()
        r.update(before=before.predictions.tolist(), after=after.predictions.tolist(),
                 labels=None if before.labels is None else before.labels.tolist(),
                 class_names=before.class_names, probs_before=before.probs,
                 probs_after=after.probs, n_edits=len(req.edits) if req.edits else 0,
                 seconds=time.perf_counter() - t0)
        yield Finished(r)
    return job


# -- export, methods, logit lens ---------------------------------------------------------------
def export(edits, folder: str, force: bool, prompt) -> Job:
    """Export, then reload the folder and check it against the in-app edited model (on a
    prompt; a spiking network: on samples ``[n, time, channels]``)."""
    def job(ctx: Context):
        from neurolens.evals.export_check import verify_export
        _needs_model(ctx)
        report = ctx.model.export(edits, folder, force=force)
        if ctx.model.kind == "snn":
            from neurolens.engine.snn.views import verify_export as verify_snn
            check = verify_snn(ctx.model, folder, edits, prompt)
        else:
            check = verify_export(ctx.model, folder, edits, prompt,
                                  plain_exact=not report.sidecar)
        yield Finished({"path": str(report.path), "baked": report.baked,
                        "sidecar": report.sidecar, "summary": report.summary(), "check": check})
    return job


def fit(method: str, params: dict, sets: dict) -> Job:
    """Fit a registered method (by id or title) on the texts of its roles; the result holds its
    edits, report line and neurons. ``params`` holds the form's values and the set names per
    role."""
    def job(ctx: Context):
        from neurolens.methods import registry
        _needs_model(ctx)
        spec = registry.get(method)
        spec.check_model(ctx.model)
        for r in spec.roles:
            if not r.needed(params):
                continue
            if r.differs_from and params.get(r.name) == params.get(r.differs_from):
                raise NeurolensError(registry.different_sets_error(r.differs_from, r.name))
            if not sets.get(r.name):
                raise NeurolensError(f"the prompt set '{params.get(r.name, r.name)}' "
                                     f"({r.name}) is empty or missing")
        res = spec.run(ctx.model, sets, spec.make_params(params), cancel=ctx.cancel,
                       shown=params.get("current") or None)
        text = spec.describe(res, {r.name: params[r.name] for r in spec.roles
                                   if isinstance(params.get(r.name), str)})
        if params.get("with_answers") and spec.answered_roles:
            text += " (answers probed too)"
        yield Finished({"method": method, "ops": list(res.edits), "text": text,
                        "neurons": res.neurons, "inside": res.extra.get("inside")})
    return job


def logit_lens(layer: int, neuron: int) -> Job:
    """The tokens a neuron promotes and suppresses (``{"error": ...}`` where it cannot)."""
    def job(ctx: Context):
        if ctx.model is None:
            yield Finished({"error": "no model loaded"})
            return
        try:
            lens = ctx.model.logit_lens(layer, neuron)
        except Exception as e:  # noqa: BLE001 - shown in the inspector
            lens = {"error": describe_error(e)}
        yield Finished(lens)
    return job
