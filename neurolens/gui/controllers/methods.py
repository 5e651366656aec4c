"""Method fits: the form's method and values, the texts of each of its prompt-set roles, the
fit on the worker, and its edits, report and neurons on screen."""

from __future__ import annotations

from PySide6.QtCore import Signal

from neurolens.gui import jobs
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters import results
from neurolens.gui.presenters.methods import method_sets
from neurolens.methods import registry


class MethodController(Controller):
    #: a fit went to the worker: method, params (set names resolved), texts per role
    fitSubmitted = Signal(str, object, object)

    def __init__(self, window):
        super().__init__(window)
        self.result: dict | None = None

    def fit(self, method: str, params: dict) -> None:
        """Fit a registered method (id or title) with the form's ``params`` (its values and the
        set name of each role) on the loaded prompt sets."""
        w = self.w
        if w.model_info is None:
            w.show_error("No model loaded.")
            return
        if w.running:
            return
        spec = registry.get(method)
        params = dict(params)
        sets = method_sets(w.prompt_list, spec, params)
        if w.runs.req is not None:
            params["current"] = list(w.runs.req.prompts)   # reported on by some methods
        self.result = None
        w.methods_panel.fit_btn.setEnabled(False)
        w.set_busy(True, f"fitting {method}…")
        w.progress_bar.setRange(0, 0)
        self.fitSubmitted.emit(method, params, sets)
        w.jobs.submit(jobs.fit(method, params, sets), done=self._fitted, failed=self._failed)

    def _fitted(self, r: dict) -> None:
        w = self.w
        self.result = r
        w.progress_bar.setRange(0, 100)
        w.progress_bar.setValue(100)
        w.methods_panel.fit_btn.setEnabled(True)
        w.edits_panel.add_ops(r["ops"], f"add {r['method']}")
        w.methods_panel.report.setText(results.method_report(r))
        if r["neurons"]:
            w.select_neurons(r["neurons"])
        if r.get("inside") is not None:
            w.neurons.show_inside(r["inside"])
        w.set_busy(False, r["text"])

    def _failed(self, msg: str) -> None:
        w = self.w
        w.progress_bar.setRange(0, 100)
        w.methods_panel.fit_btn.setEnabled(True)
        w.set_busy(False, "method failed")
        w.show_error(f"The method failed.\n\n{msg}")
