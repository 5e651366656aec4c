"""Export of the edited model (with its reload check) and the edit files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from neurolens.gui import jobs
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters import results
from neurolens.spec.edits import EditSet, ModelRef


class ExportController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.result: dict | None = None
        self.message = ""
        self._info_box: QMessageBox | None = None

    def export_model(self, folder: str, force: bool = False) -> None:
        """Export the enabled edits into a copy of the model in ``folder``, then check the
        reloaded folder against the in-app edited model on the typed (or first) prompt."""
        w = self.w
        if w.model_info is None:
            w.show_error("No model loaded.")
            return
        self.result = None
        rows = w.prompt_list.rows
        prompt = w.prompt_edit.toPlainText() or (rows[0][1] if rows else "")
        if w.family.picker == "samples":      # a spiking network: checked on samples
            req = w.snn.request(None, 0)
            prompt = req.spikes[:64] if req is not None else None
        w.set_busy(True, f"exporting to {folder}…")
        job = jobs.export(w.edit_model.enabled_set() or EditSet(), folder, force, prompt)
        w.jobs.submit(job, done=self._done, failed=self._failed)

    def _done(self, r: dict) -> None:
        self.result = r
        self.w.set_busy(False, f"exported to {r['path']}")
        self.message = results.export_message(r)
        box = QMessageBox(QMessageBox.Icon.Information, "Export finished", self.message,
                          QMessageBox.StandardButton.Ok, self.w)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self._info_box = box

    def _failed(self, msg: str) -> None:
        self.w.set_busy(False, "export failed")
        self.w.show_error(f"Export failed.\n\n{msg}")

    def export_model_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self.w, "Export edited model to folder")
        if not d:
            return
        force = False
        p = Path(d)
        if p.is_dir() and any(p.iterdir()):
            ans = QMessageBox.question(self.w, "Replace folder?",
                                       f"{d} is not empty. Replace its contents?")
            if ans != QMessageBox.StandardButton.Yes:
                return
            force = True
        self.export_model(d, force)

    # -- edit files ------------------------------------------------------------------------------
    def import_edits(self, path: str) -> bool:
        try:
            es = EditSet.load(path)
        except Exception as e:  # noqa: BLE001
            self.w.show_error(f"Could not import edits.\n\n{e}")
            return False
        self.w.edits_panel.add_ops(list(es), "import edits")
        return True

    def export_edits(self, path: str) -> None:
        w = self.w
        es = w.edit_model.edit_set()
        if w.model_info:
            es.model = ModelRef(w.model_info["name"], w.model_info["fingerprint"])
        es.save(path)
        w.status.setText(f"saved {len(es)} edit(s) to {path}")

    def import_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self.w, "Import edits", "", "Edits (*.json)")
        if f:
            self.import_edits(f)

    def export_edits_dialog(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self.w, "Export edits", "edits.json",
                                           "Edits (*.json)")
        if f:
            self.export_edits(f)
