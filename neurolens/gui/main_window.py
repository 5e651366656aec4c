"""Main window: a shell around the views, the presenters and the controllers.

The window builds its widgets (views/window_ui.py), wires them to the controllers (prompts, runs,
method fits, neurons and key space, sessions, export) and redraws the views at 30 Hz from what
the Qt-free presenters compute from the stores (presenters/). It never computes on the GUI
thread and never touches the model: the worker thread owns it and runs jobs (jobs.py); the
projector computes PCA / UMAP in a pool. What differs between model families is chosen once,
when a model loads (presenters/family.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QThread, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QDialog, QMainWindow, QMessageBox

from neurolens import __version__
from neurolens.gui import gc_policy, jobs
from neurolens.gui.controllers.attention import AttentionController
from neurolens.gui.controllers.attribute import AttributeController
from neurolens.gui.controllers.export import ExportController
from neurolens.gui.controllers.methods import MethodController
from neurolens.gui.controllers.neurons import NeuronController
from neurolens.gui.controllers.prompts import PromptController
from neurolens.gui.controllers.runs import RunController
from neurolens.gui.controllers.sessions import SessionController
from neurolens.gui.controllers.snn import SNNController
from neurolens.gui.edit_model import EditModel
from neurolens.gui.presenters.family import GENERATION_ROWS, PANELS, family_for
from neurolens.gui.presenters.maps import Maps, View
from neurolens.gui.settings import user_settings
from neurolens.gui.views import window_ui
from neurolens.gui.worker import Jobs, Projector, Worker, lower_thread_priority, spill_folder
from neurolens.spec.edits import EditSet
from neurolens.spec.run import DenoiseParams, GenerationParams
from neurolens.store import CaptureStore


def _on(controller: str, name: str) -> property:
    """A window attribute kept by one of its controllers (read and written through it)."""
    return property(lambda self: getattr(getattr(self, controller), name),
                    lambda self, v: setattr(getattr(self, controller), name, v))


class MainWindow(QMainWindow):
    REFRESH_MS = 33
    AUTOSAVE_MS = SessionController.AUTOSAVE_MS

    # what the controllers keep, under the names the tests, the bench and app.py read
    running = _on("runs", "running")
    run_id = _on("runs", "run_id")
    last_outputs = _on("runs", "last_outputs")
    compare_result = _on("runs", "compare_result")
    last_images = _on("runs", "last_images")
    _current_req = _on("runs", "req")
    _pending_run_after_load = _on("runs", "pending_after_load")
    method_result = _on("methods", "result")
    export_result = _on("exports", "result")
    export_message = _on("exports", "message")
    autosave_path = _on("sessions", "autosave_path")
    _dirty = _on("sessions", "dirty")
    selection = _on("neurons", "selection")
    neuron_sets = _on("neurons", "sets")
    _umap_pending = _on("neurons", "umap_pending")

    def __init__(self, settings: QSettings | None = None, autosave_path: str | None = None):
        super().__init__()
        gc_policy.acquire(QApplication.instance(), self)    # until closed and the worker ends
        self.setWindowTitle(f"neurolens {__version__}")
        self.resize(1480, 920)
        self.settings = settings or user_settings()
        # rows past 64 MB wait in an unnamed file until a view reads them (issue 29)
        spill = dict(ring=64, spill=64 << 20, spill_dir=spill_folder())
        self.store = CaptureStore(**spill)          # the (edited) run
        self.store_base = CaptureStore(**spill)     # the baseline of a comparison
        self.edit_model = EditModel()
        self.family = family_for(None)
        self.maps = Maps(self.store, self.store_base, self.family)
        self.model_info: dict | None = None
        self.loading, self.loading_name = False, ""
        self.refresh_times: list[float] = []          # timestamps of redraws (benchmarks)
        self.errors: list[str] = []                   # messages shown to the user
        self._error_box: QMessageBox | None = None
        self._drawn_version = -1

        # the worker thread owns the model and runs jobs; it computes at a lower priority than
        # the event loop (Linux: per-thread nice)
        self.thread = QThread(self)
        self.thread.setObjectName("neurolens-worker")
        self.worker = Worker()
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(lower_thread_priority, Qt.ConnectionType.DirectConnection)
        self.jobs = Jobs(self.worker, self)
        self.thread.start()

        self.sessions = SessionController(self, autosave_path)
        self.autosave_timer = self.sessions.timer
        self.prompt_sets = PromptController(self)
        self.prompt_list = self.prompt_sets.list
        self.runs = RunController(self)
        self.methods = MethodController(self)
        self.exports = ExportController(self)
        self.neurons = NeuronController(self)
        self.attribution = AttributeController(self)
        self.attention = AttentionController(self)
        self.snn = SNNController(self)
        self.picker = self.prompt_sets        # the prompt panel's sets: prompts or samples
        self.projector = Projector()
        self.projector.ready.connect(self.neurons.projected)
        window_ui.build_ui(self)
        window_ui.build_menus(self)
        self.attribution.wire()
        self.attention.wire()
        self.apply_family(self.family)
        self.timer = QTimer(self)
        self.timer.setInterval(self.REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        # everything a session holds marks it changed (prompts, sets and edits do so where
        # they change); a model that finished loading does too, in _on_loaded
        for sig in (self.max_tokens.valueChanged, self.seed.valueChanged,
                    self.temperature.valueChanged, self.sampling.toggled, self.run_list.toggled,
                    self.kind_combo.currentIndexChanged, self.stat_combo.currentIndexChanged,
                    self.show_combo.currentIndexChanged, self.set_a.currentIndexChanged,
                    self.set_b.currentIndexChanged, self.layer_spin.valueChanged):
            sig.connect(self.mark_dirty)
        self.set_busy(False)

    # -- model -------------------------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        v = self.settings.value("recent_models", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _remember(self, name: str) -> None:
        rec = [name] + [r for r in self.recent_models() if r != name]
        self.settings.setValue("recent_models", rec[:10])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for r in self.recent_models():
            a = QAction(r, self)
            a.triggered.connect(lambda _=False, r=r: self.open_model(r))
            self.recent_menu.addAction(a)
        self.recent_menu.setEnabled(bool(self.recent_models()))

    def _open_model_dialog(self) -> None:
        d = window_ui.OpenModelDialog(self, self.recent_models())
        if d.exec() == QDialog.DialogCode.Accepted and d.value():
            self.open_model(d.value())

    def open_model(self, name: str | None = None) -> None:
        if self.running:
            self.show_error("A run is in progress: cancel it before loading another model.")
            return
        self.set_busy(True, f"loading {name or 'the demo model'}…")
        self.progress_bar.setRange(0, 0)  # indeterminate while loading
        self.loading, self.loading_name = True, name or ""
        self.jobs.submit(jobs.load(name or ""), done=self._on_loaded, failed=self._on_load_failed)

    def _on_loaded(self, info: dict) -> None:
        self.loading = False
        self.mark_dirty()
        gc_policy.GuiThreadCollector.freeze()     # the model's objects: out of the collector's way
        self.model_info = info
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(100)
        self.apply_family(family_for(info))
        self.model_label.setText(self.family.model_label())
        n = info["n_layers"]
        self.layer_spin.setRange(0, max(0, n - 1))
        layer = (self.sessions.layer if 0 <= self.sessions.layer < n
                 else self.family.default_layer())
        self.layer_spin.setValue(max(0, layer))
        kinds, cur = self.family.neuron_kinds(), self.kind_combo.currentText()
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        self.kind_combo.addItems(kinds)
        self.kind_combo.setCurrentText(cur if cur in kinds else kinds[0])
        self.kind_combo.blockSignals(False)
        self._preshape_maps()
        self.snn.loaded(info)
        self._remember(self.loading_name or info["name"])
        notes = "; ".join(info.get("notes", []))
        self.set_busy(False, f"loaded {info['name']}" + (f" ({notes})" if notes else ""))
        if self.runs.pending_after_load and not self.snn.loading_sets:
            self.runs.pending_after_load = False
            self.run()

    def _on_load_failed(self, msg: str) -> None:
        self.loading = False
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.set_busy(False, "load failed")
        self.show_error(f"Could not load the model.\n\n{msg}")

    @property
    def diffusion(self) -> bool:
        return self.family.kind == "diffusion"

    def apply_family(self, fam) -> None:
        """Show the controls and labels of a model family (once per load)."""
        self.family = self.maps.family = fam
        self.runs.set_family(fam)
        for name in GENERATION_ROWS:
            self._gen_form.setRowVisible(getattr(self, name), name in fam.generation_rows)
        self.gen_box.setVisible(bool(fam.generation_rows))
        self.layer_map.set_title(fam.map_title)
        self.view_split.setSizes(list(fam.split))
        self.methods_panel.set_kind(fam.kind)
        self.edits_panel.set_kind(fam.kind, fam.n_layers)
        self.inspector.set_mode(fam.inspector)
        self.attribution.set_family(fam)
        self.attention.set_family(fam)
        self.picker = self.snn if fam.picker == "samples" else self.prompt_sets
        self.picker_label.setText(fam.placeholder if fam.picker == "samples" else "")
        self.picker_label.setVisible(fam.picker == "samples")
        for w in (self.step_label, self.step_spin):
            w.setVisible(fam.uses_steps)
        for name in PANELS:
            getattr(self, name).setVisible(name in fam.panels)
        self.prompt_edit.setPlaceholderText(fam.placeholder)
        self.token_map.set_title(fam.token_title)
        self.token_map.plot.setLabel("left", fam.token_axis)
        self.layer_map.plot.setLabel("left", fam.layer_axis)
        self.layer_label.setText(fam.layer_label)
        self.shipped.blockSignals(True)
        self.shipped.clear()
        self.shipped.addItems([s.label for s in fam.shipped()])
        self.shipped.blockSignals(False)

    # -- prompts (the prompt controller) -----------------------------------------------------------
    @property
    def prompts(self) -> list[tuple[str, str]]:
        return self.prompt_list.rows

    @property
    def prompt_answers(self) -> dict[str, str]:
        return self.prompt_list.answers

    def set_names(self) -> list[str]:
        return self.prompt_list.set_names()

    def add_prompts(self, prompts: list[str], set_name: str) -> None:
        self.prompt_sets.add(prompts, set_name)

    def set_prompts(self, rows, answers: dict | None = None) -> None:
        self.prompt_sets.replace(rows, answers)

    def clear_prompts(self) -> None:
        self.prompt_sets.clear()

    def load_shipped_set(self, skill: str, n: int = 24, split: str | None = "probe",
                         set_name: str | None = None) -> None:
        self.prompt_sets.load_shipped(skill, n, split, set_name)

    def load_prompt_file(self, path: str, set_name: str | None = None) -> None:
        self.prompt_sets.load_file(path, set_name)

    def define_prompt_set(self, indices: list[int], name: str | None = None) -> str:
        return self.prompt_sets.define_set(indices, name)

    # -- runs (the run controller) -----------------------------------------------------------------
    def generation_params(self) -> GenerationParams:
        """The Generation form as data."""
        return GenerationParams(max_new_tokens=self.max_tokens.value(),
                                do_sample=self.sampling.isChecked(),
                                temperature=self.temperature.value(), seed=self.seed.value(),
                                batch_size=16, ignore_eos=not self.stop_eos.isChecked())

    def set_generation_params(self, g: GenerationParams) -> None:
        """Fill the Generation form from data (the inverse of ``generation_params``)."""
        self.max_tokens.setValue(g.max_new_tokens)
        self.sampling.setChecked(g.do_sample)
        self.temperature.setValue(g.temperature)
        self.seed.setValue(g.seed)
        self.stop_eos.setChecked(not g.ignore_eos)

    def set_run_list(self, on: bool) -> None:
        """Run the prompt list (True) or the typed prompt (False)."""
        self.run_list.setChecked(on)

    def denoise_params(self) -> DenoiseParams:
        """The diffusion settings of the form as data (the seed is the form's one seed)."""
        return DenoiseParams(steps=self.steps_spin.value(), guidance=self.guidance_spin.value(),
                             seed=self.seed.value())

    def current_edits(self) -> EditSet | None:
        """An immutable snapshot of the enabled edits for a run."""
        return self.edit_model.enabled_set()

    def build_request(self):
        return self.runs.build_request()

    def run(self) -> None:
        self.runs.run()

    def compare(self) -> None:
        self.runs.compare()

    def cancel(self) -> None:
        self.runs.cancel()

    def set_busy(self, busy: bool, text: str | None = None) -> None:
        self.run_btn.setEnabled(not busy)
        self.compare_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy and self.running)
        if text is not None:
            self.status.setText(text)

    # -- views -------------------------------------------------------------------------------------
    def view_choice(self) -> View:
        """The view bar's choices as data."""
        return View(kind=self.kind_combo.currentText(), diff=self.stat_combo.currentIndex() == 1,
                    set_a=self.set_a.currentText(), set_b=self.set_b.currentText(),
                    show=self.show_combo.currentIndex(), layer=self.layer_spin.value(),
                    step=self.step_spin.value(), prompt=self.prompt_spin.value())

    def layer_matrix(self) -> np.ndarray | None:
        """The layer x neuron statistic of the edited run, the baseline, or their difference."""
        return self.maps.layer_matrix(self.view_choice())

    def token_matrix(self) -> tuple[np.ndarray, list[str]] | None:
        return self.maps.token_matrix(self.view_choice())

    def keyspace_matrix(self) -> tuple[np.ndarray, list[str], list[str]] | None:
        return self.maps.keyspace_matrix(self.view_choice())

    def site(self, layer: int) -> str:
        return self.family.site(layer, self.kind_combo.currentText())

    def _preshape_maps(self) -> None:
        """Before any data: lay the maps out for the shape the loaded model's data will have."""
        if self.model_info is None:
            return
        self.layer_map.preshape(*self.family.map_shape(self.kind_combo.currentText(),
                                                       self.layer_spin.value()))
        self.token_map.preshape(None, self.model_info["sites"].get(
            self.site(self.layer_spin.value()), 0))

    def _view_changed(self, *_):
        self.maps.levels.clear()
        self._preshape_maps()
        self.refresh(force=True)
        if self.sender() in (self.kind_combo, self.layer_spin) and not self.running:
            self.update_scatter()
        if self.sender() is self.layer_spin:
            self.snn.draw_delays()
        if self.sender() is self.prompt_spin:
            self.runs.show_output()

    def refresh(self, force: bool = False) -> None:
        """Timer tick: redraw from the store when it changed (never waits on the worker)."""
        v = self.store.version + self.store_base.version
        if v == self._drawn_version and not force:
            return
        self._drawn_version = v
        view = self.view_choice()
        for heatmap, data in ((self.layer_map, self.maps.layer_view(view)),
                              (self.token_map, self.maps.token_view(view, self.running))):
            if data is not None:
                heatmap.set_data(data[0], data[1])
                heatmap.set_row_labels(data[2])
        self.snn.refresh(view)
        self.neurons.mark()
        self.refresh_times.append(time.perf_counter())
        if len(self.refresh_times) > 1000:
            del self.refresh_times[:500]

    def update_scatter(self) -> None:
        self.neurons.update_scatter()

    # -- selection / inspector (the neuron controller) --------------------------------------------
    def select_neurons(self, neurons: list[tuple[str, int]], additive: bool = False) -> None:
        self.neurons.select(neurons, additive)

    def inspect(self, site: str, idx: int) -> None:
        self.neurons.inspect(site, idx)

    def save_selection_as_set(self, name: str = "") -> str | None:
        return self.neurons.save_set(name)

    def set_neuron_sets(self, sets: dict) -> None:
        self.neurons.set_sets(sets)

    # -- edits, export, methods, sessions (their controllers) -------------------------------------
    def edits_changed(self) -> None:
        self.mark_dirty()
        n = len(self.edit_model.ops)
        self.right_tabs.setTabText(1, f"Edits ({n})" if n else "Edits")
        self.snn.edits_changed()

    def export_model(self, folder: str, force: bool = False) -> None:
        self.exports.export_model(folder, force)

    def import_edits(self, path: str) -> bool:
        return self.exports.import_edits(path)

    def export_edits(self, path: str) -> None:
        self.exports.export_edits(path)

    def fit_method(self, method: str, params: dict) -> None:
        self.methods.fit(method, params)

    def session(self):
        return self.sessions.session()

    def apply_session(self, ses, load_model: bool = True) -> None:
        self.sessions.apply(ses, load_model)

    def save_session(self, path: str) -> Path:
        return self.sessions.save(path)

    def open_session(self, path: str, load_model: bool = True) -> bool:
        return self.sessions.open(path, load_model)

    def mark_dirty(self) -> None:
        """Something the user did changed: autosave a few seconds later."""
        self.sessions.mark_dirty()

    def autosave(self) -> None:
        self.sessions.autosave()

    def has_autosave(self) -> bool:
        return self.sessions.has_autosave()

    def restore_autosave(self, load_model: bool = True) -> bool:
        return self.sessions.restore(load_model)

    def offer_restore(self) -> None:
        self.sessions.offer_restore()

    # -- errors / about ----------------------------------------------------------------------------
    def show_error(self, msg: str) -> None:
        """Non-blocking error dialog; the app stays usable."""
        self.errors.append(msg)
        if self._error_box is not None:
            self._error_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "neurolens", msg,
                          QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self._error_box = box

    def about_text(self) -> str:
        import diffusers
        import torch
        import transformers
        dev = self.model_info["device"] if self.model_info else "no model loaded"
        return (f"neurolens {__version__}\n\ntorch {torch.__version__}\n"
                f"transformers {transformers.__version__}\ndiffusers {diffusers.__version__}\n"
                f"device: {dev}")

    def show_about(self) -> None:
        QMessageBox.about(self, "About neurolens", self.about_text())

    def closeEvent(self, ev) -> None:
        self.sessions.close()     # a clean exit leaves no autosave behind
        self.worker.cancel_token.cancel()
        self.timer.stop()
        self.thread.quit()
        self.thread.wait(5000)
        self.projector.cancel()   # a running UMAP child process ends
        self.projector.pool.waitForDone(2000)
        # automatic collection comes back once no thread of this window can run it any more
        thread, pool = self.thread, self.projector.pool
        gc_policy.release(self, lambda: thread.isFinished() and pool.activeThreadCount() == 0)
        super().closeEvent(ev)

    def __repr__(self) -> str:  # pragma: no cover
        return f"<MainWindow model={json.dumps((self.model_info or {}).get('name'))}>"
