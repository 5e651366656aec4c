"""Runs and comparisons: the request from the forms, the job for the loaded model's family,
progress, streamed texts or images, and the result."""

from __future__ import annotations

from neurolens.gui import jobs
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters import results
from neurolens.spec.run import RunSpec


class RunController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.run_id = 0
        self.running = False
        self.req: RunSpec | None = None          # the request of the run on screen
        self.last_outputs: dict | None = None
        self.compare_result: dict | None = None
        self.last_images = None
        self.texts: dict[int, str] = {}
        self.pending_after_load = False          # Run pressed while the model loads
        self.set_family(window.family)

    def set_family(self, fam) -> None:
        """The jobs and result views of the loaded model's family (chosen once per load)."""
        self._run_job, self._compare_job, self._on_update, self._on_compared = {
            "text": (jobs.generate, jobs.compare_generations, self._texts,
                     self._compared_texts),
            "images": (jobs.denoise, jobs.compare_images, self._images, self._compared_images),
            "classes": (jobs.classify, jobs.compare_samples, self._classes,
                        self._compared_classes),
        }[fam.output]
        self._build = self._sample_request if fam.picker == "samples" else self.build_request

    # -- requests ----------------------------------------------------------------------------------
    def build_request(self) -> RunSpec | None:
        """An immutable request from the forms (None: no prompt to run)."""
        w = self.w
        rp = w.prompt_list.for_run(w.run_list.isChecked(), w.prompt_edit.toPlainText(),
                                   w.set_name.text(), w.stop_answer.isChecked())
        if rp is None:
            return None
        params = w.generation_params()
        params.row_stop = rp.row_stop
        kinds = tuple(dict.fromkeys(["mlp.hook_post", w.kind_combo.currentText()]))
        self.run_id += 1
        return RunSpec(prompts=rp.prompts, set_names=rp.set_names, site_kinds=kinds,
                       generation=params, denoise=w.denoise_params(), edits=w.current_edits(),
                       run_id=self.run_id, answers=rp.answers)

    def _sample_request(self):
        """A spiking network's request: the picked samples (None: none picked)."""
        self.run_id += 1
        return self.w.snn.request(self.w.current_edits(), self.run_id)

    def _request(self, queue_while_loading: bool = False) -> RunSpec | None:
        w = self.w
        if self.running:
            return None
        if w.model_info is None:
            if queue_while_loading and w.loading:
                self.pending_after_load = True
                return None
            w.show_error("No model loaded: use File ▸ Open model.")
            return None
        if w.family.picker == "samples" and w.snn.loading_sets:
            self.pending_after_load = True        # runs when the samples are read
            return None
        req = self._build()
        if req is None:
            w.show_error("Type a prompt (or load a prompt set) first." if w.family.picker
                         == "prompts" else "Pick samples first (a shipped set or a file).")
        return req

    def _begin(self, req: RunSpec, status: str) -> None:
        w = self.w
        self.req = req
        if isinstance(req, RunSpec):
            w.maps.begin(req.prompts, req.set_names, req.generation.max_new_tokens)
        else:
            w.maps.begin(req.prompts, req.set_names, 0, getattr(req, "labels", None))
        self.last_outputs = None
        w.prompt_spin.setRange(0, len(req.prompts) - 1)
        self.running = True
        w.set_busy(True, status)

    def _submit(self, job, done) -> None:
        self.w.jobs.submit(job, started=self._started, progress=self._progress,
                           update=self._on_update, done=done, failed=self._failed,
                           cancelled=self._cancelled)

    def run(self) -> None:
        req = self._request(queue_while_loading=True)
        if req is None:
            return
        w = self.w
        w.output_label.setText("")
        # a plain run has no baseline: drop a stale comparison and show the run itself
        w.store_base.clear()
        w.show_combo.setCurrentIndex(0)
        self._begin(req, f"running {len(req.prompts)} prompt(s)…")
        self._submit(self._run_job(req, w.store), self._finished)

    def compare(self) -> None:
        """Re-run the prompt(s) with and without the enabled edits (same seed, same settings)."""
        req = self._request()
        if req is None:
            return
        if req.edits is None:
            self.w.show_error("No enabled edits: select neurons and add an edit first.")
            return
        self.compare_result = None
        self._begin(req, f"comparing {len(req.prompts)} prompt(s) with / without edits…")
        self._submit(self._compare_job(req, self.w.store, self.w.store_base),
                     self._on_compared)

    def cancel(self) -> None:
        if self.running:
            self.w.worker.cancel_token.cancel()   # thread-safe flag: stops within a token
            self.w.status.setText("cancelling…")

    # -- what the worker sends -----------------------------------------------------------------
    def _started(self, total: int) -> None:
        self.w.progress_bar.setRange(0, max(1, total))
        self.w.progress_bar.setValue(0)

    def _progress(self, done: int, total: int) -> None:
        self.w.progress_bar.setMaximum(max(1, total))
        self.w.progress_bar.setValue(done)

    def _texts(self, texts: dict) -> None:
        self.texts = texts
        self.show_output()

    def show_output(self) -> None:
        """The shown prompt and what the model generated after it."""
        req = self.req
        if req is None or not self.w.family.text_output:
            return
        i = min(self.w.prompt_spin.value(), len(req.prompts) - 1)
        self.w.output_label.setText(results.output_html(req.prompts[i], self.texts.get(i, "")))

    def _images(self, payload) -> None:
        step, images = payload
        if images is None:
            return
        n = self.req.denoise.steps if self.req is not None else step
        self.last_images = images
        self.w.image_grid.show_rows([images], results.images_caption(step, n,
                                                                     self.w.seed.value()))

    def _classes(self, done: int) -> None:
        """A spiking network's batches arrive: the rasters fill in (the store is drawn)."""

    def _compared_classes(self, r: dict) -> None:
        self.compare_result = r
        self.last_outputs = {"outputs": [r["class_names"][k] for k in r["after"]]}
        self.w.compare_view.show_classes(r, list(self.req.prompts) if self.req else [])
        self.w.center_tabs.setCurrentWidget(self.w.compare_view)
        self._ended(f"compared: {r['n_changed']} of {r['n']} predictions changed")

    def _ended(self, status: str) -> None:
        w = self.w
        self.running = False
        w.progress_bar.setValue(w.progress_bar.maximum())
        w.set_busy(False, status)
        w.refresh(force=True)
        w.update_scatter()

    def _finished(self, summary: dict) -> None:
        self.last_outputs = summary
        acc = summary.get("accuracy")
        self._ended(f"done in {summary['seconds']:.2f}s"
                    + ("" if acc is None else f" · accuracy {acc:.3f}"))

    def _compared_texts(self, r: dict) -> None:
        self.compare_result = r
        self.last_outputs = {"outputs": [it["edit_text"] for it in r["items"]]}
        self.w.compare_view.show_result(r)
        self.w.center_tabs.setCurrentWidget(self.w.compare_view)
        self._ended(results.compare_status(r))

    def _compared_images(self, r: dict) -> None:
        self.compare_result = r
        rows, caption = results.image_compare_rows(r)
        self.w.image_grid.show_rows(rows, caption)
        self.w.center_tabs.setCurrentIndex(0)
        self._ended(results.image_compare_status(r))

    def _failed(self, msg: str) -> None:
        self.running = False
        self.w.set_busy(False, "run failed")
        self.w.show_error(f"The run failed.\n\n{msg}")

    def _cancelled(self) -> None:
        self.running = False
        self.w.set_busy(False, "cancelled")
        self.w.refresh(force=True)
