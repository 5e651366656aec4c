"""The one long-lived worker: owns the model on its own QThread and drives engine generators.

The GUI talks to it only through queued signals (requests in) and small notices (signals out).
Cancel is a thread-safe flag the GUI sets directly; the engine checks it at every token.
Activations go into the shared, thread-safe CaptureStore; views pull from it on a timer.
"""

from __future__ import annotations

import sys
import time
import traceback

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from neurolens.engine.hooks import CancelToken
from neurolens.engine.events import (Cancelled, Failed, Finished, PromptProcessed,
                                     TokenAppended)
from neurolens.errors import NeurolensError
from neurolens.spec.run import RunSpec
from neurolens.spec.sites import site_name
from neurolens.store import CaptureStore


def describe_error(e: BaseException) -> str:
    if isinstance(e, NeurolensError):
        return str(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"


def lower_thread_priority(nice: int = 10) -> None:
    """Give the calling thread (and the threads it starts later, such as torch's OpenMP team) a
    lower scheduling priority than the GUI thread, so that on a machine with few cores the
    event loop gets a core as soon as it has work. Linux only (per-thread nice); elsewhere a
    no-op."""
    import os
    import threading
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError:
        pass


class Worker(QObject):
    loaded = Signal(object)             # model info
    loadFailed = Signal(str)
    runStarted = Signal(int, int)     # run id, total steps
    progress = Signal(int, int, int)  # run id, done, total
    textUpdated = Signal(int, object)   # run id, {prompt index: generated text so far}
    runFinished = Signal(int, object)   # run id, summary
    runFailed = Signal(int, str)
    runCancelled = Signal(int)
    lensReady = Signal(int, int, object)
    busyChanged = Signal(bool)
    compareFinished = Signal(int, object)
    exportFinished = Signal(object)
    exportFailed = Signal(str)
    methodFitted = Signal(object)
    methodFailed = Signal(str)
    imagesUpdated = Signal(int, int, object)   # run id, step, images [n, H, W, C] (diffusion)

    def __init__(self, store: CaptureStore, store_base: CaptureStore | None = None):
        super().__init__()
        self.store = store
        self.store_base = store_base if store_base is not None else CaptureStore()
        self.lm = None
        self.cancel_token = CancelToken()
        self.emit_interval = 0.03       # seconds between text notices (display rate)

    # -- requests (run on the worker thread) --------------------------------------------------------
    @Slot(str)
    def load_model(self, name: str) -> None:
        from neurolens.engine.loading import load
        self.busyChanged.emit(True)
        try:
            lm = load(name or None)
            self.lm = lm
            info = {"name": lm.name_or_path, "kind": lm.kind, "model_type": lm.model_type,
                    "n_layers": lm.n_layers, "n_params": lm.n_params(), "sites": lm.sites(),
                    "notes": list(lm.notes), "fingerprint": lm.fingerprint,
                    "device": str(lm.device)}
            if lm.kind == "diffusion":
                info["site_list"] = list(lm.sites())
                info["aliases"] = lm.aliases()
                info["image_size"] = lm.image_size
            self.loaded.emit(info)
        except Exception as e:  # noqa: BLE001 - reported to the user, the app keeps running
            self.loadFailed.emit(describe_error(e))
        finally:
            self.busyChanged.emit(False)

    def _generate(self, req: RunSpec, edits, store: CaptureStore, offset: int, total: int):
        """One generation pass streaming into ``store``: ("finished", outputs, texts) |
        ("cancelled", None, texts) | ("failed", message, texts)."""
        lm = self.lm
        store.clear()
        sites = [site_name(layer, k) for k in req.site_kinds for layer in range(lm.n_layers)]
        texts: dict[int, str] = {}
        done = 0
        last_emit = 0.0
        events = lm.generate_events(list(req.prompts), edits=edits, params=req.generation,
                                    cancel=self.cancel_token, capture_sites=sites,
                                    store=store, set_names=list(req.set_names))
        for ev in events:
            if isinstance(ev, TokenAppended):
                for i, t in zip(ev.prompt_indices, ev.texts):
                    if t is not None:
                        texts[i] = texts.get(i, "") + t
                        store.add_tokens(i, [t])
                done += len(ev.prompt_indices)
            elif isinstance(ev, PromptProcessed):
                for i in ev.prompt_indices:
                    texts.setdefault(i, "")
            now = time.perf_counter()
            final = isinstance(ev, (Finished, Cancelled, Failed))
            if now - last_emit >= self.emit_interval or final:
                last_emit = now
                self.progress.emit(req.run_id, min(offset + done, total), total)
                self.textUpdated.emit(req.run_id, dict(texts))
            if isinstance(ev, Finished):
                for i, o in enumerate(ev.result):
                    if o.abstained:
                        texts[i] = o.text
                return "finished", ev.result, texts
            if isinstance(ev, Cancelled):
                return "cancelled", None, texts
            if isinstance(ev, Failed):
                return "failed", describe_error(ev.error), texts
        return "failed", "the run ended without a result", texts

    def _guarded(self, req: RunSpec, body) -> None:
        """Common frame of run-like requests: model check, busy state, errors as signals."""
        if self.lm is None:
            self.runFailed.emit(req.run_id, "no model loaded")
            return
        self.busyChanged.emit(True)
        self.cancel_token.reset()
        try:
            body(req)
        except Exception as e:  # noqa: BLE001 - reported to the user, the app keeps running
            traceback.print_exc()
            self.runFailed.emit(req.run_id, describe_error(e))
        finally:
            self.busyChanged.emit(False)

    @Slot(object)
    def run(self, req: RunSpec) -> None:
        self._guarded(req, self._run)

    @Slot(object)
    def compare(self, req: RunSpec) -> None:
        """Baseline (into store_base) then edited (into store), same seed and settings."""
        self._guarded(req, self._compare)

    # -- diffusion -------------------------------------------------------------------------------
    def _denoise(self, req: RunSpec, edits, store: CaptureStore, offset: int, total: int):
        """One denoising pass streaming per-step FFN means into ``store`` and previews out:
        ("finished", images) | ("cancelled", None)."""
        from neurolens.engine.diffusion import StepCapture, StepDone
        dm = self.lm
        store.clear()
        for i, (p, s) in enumerate(zip(req.prompts, req.set_names)):
            store.set_prompt(i, p, s)
        caps = {site: StepCapture(site, store, "mean") for site in dm.sites()}
        last = 0.0
        for ev in dm.denoise_events(list(req.prompts), edits=edits, captures=caps,
                                    steps=req.denoise.steps, guidance=req.denoise.guidance,
                                    seed=req.denoise.seed, cancel=self.cancel_token,
                                    preview=True):
            if isinstance(ev, Finished):
                self.progress.emit(req.run_id, offset + req.denoise.steps, total)
                return "finished", ev.result.images
            if isinstance(ev, Cancelled):
                return "cancelled", None
            if isinstance(ev, Failed):
                raise ev.error
            if not isinstance(ev, StepDone):
                continue
            now = time.perf_counter()
            if now - last >= self.emit_interval or ev.step == ev.n_steps - 1:
                last = now
                self.progress.emit(req.run_id, offset + ev.step + 1, total)
                self.imagesUpdated.emit(req.run_id, ev.step, ev.preview)
        return "cancelled", None

    def _run_diffusion(self, req: RunSpec) -> None:
        self.runStarted.emit(req.run_id, req.denoise.steps)
        t0 = time.perf_counter()
        st, images = self._denoise(req, req.edits, self.store, 0, req.denoise.steps)
        if st == "cancelled":
            self.runCancelled.emit(req.run_id)
            return
        self.imagesUpdated.emit(req.run_id, req.denoise.steps, images)
        self.runFinished.emit(req.run_id, {"images": images, "outputs": [""] * len(images),
                                           "seconds": time.perf_counter() - t0})

    def _compare_diffusion(self, req: RunSpec) -> None:
        import numpy as np
        total = 2 * req.denoise.steps
        self.runStarted.emit(req.run_id, total)
        t0 = time.perf_counter()
        st, before = self._denoise(req, None, self.store_base, 0, total)
        if st == "finished":
            st, after = self._denoise(req, req.edits, self.store, req.denoise.steps, total)
        if st == "cancelled":
            self.runCancelled.emit(req.run_id)
            return
        diff = np.abs(after - before)
        self.imagesUpdated.emit(req.run_id, req.denoise.steps, after)
        self.compareFinished.emit(req.run_id, {
            "diffusion": True, "before": before, "after": after, "diff": diff,
            "prompts": list(req.prompts), "seed": req.denoise.seed,
            "mean_abs_diff": [float(d.mean()) for d in diff],
            "n_edits": len(req.edits) if req.edits is not None else 0,
            "seconds": time.perf_counter() - t0})

    def _run(self, req: RunSpec) -> None:
        if getattr(self.lm, "kind", "") == "diffusion":
            self._run_diffusion(req)
            return
        total = len(req.prompts) * max(1, req.generation.max_new_tokens)
        self.runStarted.emit(req.run_id, total)
        t0 = time.perf_counter()
        status, outs, texts = self._generate(req, req.edits, self.store, 0, total)
        if status == "finished":
            self.textUpdated.emit(req.run_id, dict(texts))
            self.runFinished.emit(req.run_id, {
                "outputs": [o.text for o in outs], "tokens": [o.tokens for o in outs],
                "logprobs": [o.logprobs for o in outs],
                "abstained": [o.abstained for o in outs],
                "seconds": time.perf_counter() - t0})
        elif status == "cancelled":
            self.runCancelled.emit(req.run_id)
        else:
            self.runFailed.emit(req.run_id, outs)

    def _compare(self, req: RunSpec) -> None:
        from neurolens.engine.runner import first_divergence
        from neurolens.evals.skills import answer_correct
        if getattr(self.lm, "kind", "") == "diffusion":
            self._compare_diffusion(req)
            return
        per = len(req.prompts) * max(1, req.generation.max_new_tokens)
        total = 2 * per
        self.runStarted.emit(req.run_id, total)
        t0 = time.perf_counter()
        st, base, _ = self._generate(req, None, self.store_base, 0, total)
        if st == "finished":
            st, edited, _ = self._generate(req, req.edits, self.store, per, total)
        else:
            edited = base
        if st == "cancelled":
            self.runCancelled.emit(req.run_id)
            return
        if st == "failed":
            self.runFailed.emit(req.run_id, edited)
            return
        items = []
        for i, (b, e) in enumerate(zip(base, edited)):
            d = first_divergence(b.token_ids, e.token_ids)
            items.append({"prompt": req.prompts[i], "set": req.set_names[i],
                          "base_text": b.text, "edit_text": e.text,
                          "base_tokens": b.tokens, "edit_tokens": e.tokens,
                          "base_logprobs": b.logprobs, "edit_logprobs": e.logprobs,
                          "first_divergence": d, "changed": b.token_ids != e.token_ids,
                          "abstained": e.abstained})
        metrics = []
        answers = req.answers or (None,) * len(req.prompts)
        for name in dict.fromkeys(req.set_names):
            idx = [i for i, s in enumerate(req.set_names)
                   if s == name and answers[i] is not None]
            if not idx:
                continue

            def score(outs, idx=idx):
                return sum(answer_correct(outs[i].text, answers[i]) for i in idx) / len(idx)
            before, after = score(base), score(edited)
            metrics.append({"set": name, "n": len(idx), "before": before, "after": after,
                            "relative": after / before if before > 0 else None})
        n_edits = len(req.edits) if req.edits is not None else 0
        self.compareFinished.emit(req.run_id, {
            "items": items, "metrics": metrics, "seed": req.generation.seed, "n_edits": n_edits,
            "seconds": time.perf_counter() - t0})

    @Slot(object, str, bool, str)
    def export(self, edits, folder: str, force: bool, prompt: str) -> None:
        """Export, then reload the folder and check it against the in-app edited model."""
        if self.lm is None:
            self.exportFailed.emit("no model loaded")
            return
        self.busyChanged.emit(True)
        try:
            import numpy as np

            from neurolens.engine.loading import load
            report = self.lm.export(edits, folder, force=force)
            check = {}
            if prompt and getattr(self.lm, "kind", "") == "diffusion":
                again = load(folder)
                a = again.generate(prompt, steps=10, seed=0).images
                b = self.lm.generate(prompt, edits=edits, steps=10, seed=0).images
                diff = float(np.abs(a - b).max())
                check = {"prompt": prompt, "max_abs_pixel_diff": diff,
                         "same_output": diff < 1e-4, "output": "image (10 steps, seed 0)",
                         "plain_transformers_exact": not report.sidecar}
            elif prompt:
                again = load(folder)
                a = again.logits([prompt])[0]
                b = self.lm.logits([prompt], edits=edits)[0]
                ga = again.generate(prompt, max_new_tokens=8)
                gb = self.lm.generate(prompt, edits=edits, max_new_tokens=8)
                check = {"prompt": prompt, "max_abs_logit_diff": float(np.abs(a - b).max()),
                         "same_output": ga.token_ids == gb.token_ids, "output": ga.text,
                         "plain_transformers_exact": not report.sidecar}
            self.exportFinished.emit({"path": str(report.path), "baked": report.baked,
                                      "sidecar": report.sidecar, "summary": report.summary(),
                                      "check": check})
        except Exception as e:  # noqa: BLE001
            self.exportFailed.emit(describe_error(e))
        finally:
            self.busyChanged.emit(False)

    @Slot(str, object, object)
    def fit_method(self, method: str, params: dict, sets: dict) -> None:
        """Fit a registered method (by title) on named prompt sets; emit its EditSet, report
        line and neurons. ``params`` holds the form's values and the set names per role."""
        if self.lm is None:
            self.methodFailed.emit("no model loaded")
            return
        self.busyChanged.emit(True)
        try:
            from neurolens.methods import registry
            spec = registry.get(method)
            spec.check_model(self.lm)
            for r in spec.roles:
                if not r.needed(params):
                    continue
                if r.differs_from and params.get(r.name) == params.get(r.differs_from):
                    raise NeurolensError(registry.different_sets_error(r.differs_from, r.name))
                if not sets.get(r.name):
                    raise NeurolensError(f"the prompt set '{params.get(r.name, r.name)}' "
                                         f"({r.name}) is empty or missing")
            res = spec.run(self.lm, sets, spec.make_params(params), cancel=self.cancel_token,
                           shown=params.get("current") or None)
            text = spec.describe(res, {r.name: params[r.name] for r in spec.roles
                                       if isinstance(params.get(r.name), str)})
            if params.get("with_answers") and spec.answered_roles:
                text += " (answers probed too)"
            self.methodFitted.emit({"method": method, "ops": list(res.edits), "text": text,
                                    "neurons": res.neurons,
                                    "inside": res.extra.get("inside")})
        except Exception as e:  # noqa: BLE001
            self.methodFailed.emit(describe_error(e))
        finally:
            self.busyChanged.emit(False)

    @Slot(int, int)
    def logit_lens(self, layer: int, neuron: int) -> None:
        if self.lm is None:
            return
        try:
            self.lensReady.emit(layer, neuron, self.lm.logit_lens(layer, neuron))
        except Exception as e:  # noqa: BLE001
            self.lensReady.emit(layer, neuron, {"error": describe_error(e)})


class _Sig(QObject):
    done = Signal(int, str, object)   # request id, method, points


class _ProjectionTask(QRunnable):
    def __init__(self, sig: _Sig, rid: int, method: str, x):
        super().__init__()
        self.sig, self.rid, self.method, self.x = sig, rid, method, x

    def run(self) -> None:
        from neurolens.engine.keyspace import pca_2d, umap_2d
        try:
            pts = pca_2d(self.x) if self.method == "pca" else umap_2d(self.x)
        except Exception as e:  # noqa: BLE001
            pts = e
        try:
            self.sig.done.emit(self.rid, self.method, pts)
        except RuntimeError:   # the window closed while UMAP was running: nobody to tell
            pass


class Projector(QObject):
    """PCA / UMAP off the GUI thread (a thread pool, so a slow UMAP never blocks a run)."""

    ready = Signal(int, str, object)

    def __init__(self):
        super().__init__()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(2)
        self._sig = _Sig()
        self._sig.done.connect(self.ready)

    def submit(self, rid: int, method: str, x) -> None:
        self.pool.start(_ProjectionTask(self._sig, rid, method, x))

    def warm_up(self) -> None:
        class _Warm(QRunnable):
            def run(self_inner) -> None:
                try:
                    from neurolens.engine.keyspace import warm_up_umap
                    warm_up_umap()
                except Exception:  # noqa: BLE001 - warm-up is best effort
                    pass
        self.pool.start(_Warm())
