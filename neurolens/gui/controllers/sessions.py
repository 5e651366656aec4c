"""Sessions: what the window holds as a :class:`Session` and back, session files, and the
autosave a crash or kill leaves behind (restored at the next start)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from neurolens.gui.controllers import Controller
from neurolens.gui.settings import autosave_file
from neurolens.spec.run import GenerationParams
from neurolens.spec.session import Session


class SessionController(Controller):
    AUTOSAVE_MS = 3000

    def __init__(self, window, autosave_path: str | None = None):
        super().__init__(window)
        self.autosave_path = Path(autosave_path) if autosave_path else autosave_file()
        self.dirty = False
        self.layer = -1            # the token view's layer of an opened session (until loaded)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(self.AUTOSAVE_MS)
        self.timer.timeout.connect(self.autosave)

    def session(self) -> Session:
        w = self.w
        v = w.view_choice()
        return Session(model=(w.model_info or {}).get("name", w.loading_name or ""),
                       prompts=list(w.prompt_list.rows), typed_prompt=w.prompt_edit.toPlainText(),
                       neuron_sets={k: list(v) for k, v in w.neuron_sets.items()},
                       edits=w.edit_model.edit_set(),
                       view={"kind": v.kind, "stat": int(v.diff), "set_a": v.set_a,
                             "set_b": v.set_b, "layer": v.layer, "show": v.show,
                             "answers": w.prompt_list.answers,
                             "samples": w.snn.bank.sources()},
                       generation={**w.generation_params().to_json(),
                                   "denoise": w.denoise_params().to_json(),
                                   "run_list": w.run_list.isChecked()})

    def apply(self, ses: Session, load_model: bool = True) -> None:
        w = self.w
        w.set_prompts(ses.prompts, ses.view.get("answers", {}))
        w.prompt_edit.setPlainText(ses.typed_prompt)
        w.set_neuron_sets(ses.neuron_sets)
        w.edit_model.replace_all(list(ses.edits), "open session")
        w.edits_panel.refresh()
        g = GenerationParams.from_json({"max_new_tokens": w.max_tokens.value(),
                                        "ignore_eos": not w.stop_eos.isChecked(),
                                        **ses.generation})
        w.set_generation_params(g)
        w.set_run_list(bool(ses.generation.get("run_list", False)))
        d = ses.generation.get("denoise")
        if isinstance(d, dict):   # sessions since the run settings became data
            w.steps_spin.setValue(int(d.get("steps", w.steps_spin.value())))
            w.guidance_spin.setValue(float(d.get("guidance", w.guidance_spin.value())))
        v = ses.view
        if v.get("kind"):
            w.kind_combo.setCurrentText(v["kind"])
        w.stat_combo.setCurrentIndex(int(v.get("stat", 0)))
        w.show_combo.setCurrentIndex(int(v.get("show", 0)))
        if v.get("set_a"):
            w.set_a.setCurrentText(v["set_a"])
        if v.get("set_b"):
            w.set_b.setCurrentText(v["set_b"])
        self.layer = int(v.get("layer", -1))
        reload = bool(load_model and ses.model and ses.model != (w.model_info or {}).get("name"))
        w.snn.restore_sets(v.get("samples") or [], now=not reload)
        if reload:
            w.open_model(ses.model)
        elif self.layer >= 0:
            w.layer_spin.setValue(self.layer)
        w.edits_changed()

    def save(self, path: str) -> Path:
        out = self.session().save(path)
        self.w.status.setText(f"session saved to {out}")
        return out

    def open(self, path: str, load_model: bool = True) -> bool:
        try:
            ses = Session.load(path)
        except Exception as e:  # noqa: BLE001
            self.w.show_error(f"Could not open the session.\n\n{e}")
            return False
        self.apply(ses, load_model)
        self.w.status.setText(f"opened session {path}")
        return True

    def save_dialog(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self.w, "Save session", "session.neurolens.json",
                                           "neurolens sessions (*.neurolens.json)")
        if f:
            self.save(f)

    def open_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self.w, "Open session", "",
                                           "neurolens sessions (*.neurolens.json)")
        if f:
            self.open(f)

    # -- autosave ----------------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        """Something the user did changed: autosave a few seconds later."""
        self.dirty = True
        # not restarted by later changes: a steady stream of edits still saves every few seconds
        if not self.timer.isActive():
            self.timer.start()

    def autosave(self) -> None:
        if not self.dirty:
            return
        try:
            self.autosave_path.parent.mkdir(parents=True, exist_ok=True)
            self.session().save(self.autosave_path)
            self.dirty = False
        except OSError as e:
            self.w.status.setText(f"autosave failed: {e}")

    def has_autosave(self) -> bool:
        return self.autosave_path.is_file()

    def restore(self, load_model: bool = True) -> bool:
        return self.open(str(self.autosave_path), load_model)

    def offer_restore(self) -> None:
        """At start: offer to restore the session a crash or kill left behind."""
        if not self.has_autosave():
            return
        ans = QMessageBox.question(self.w, "Restore session?",
                                   "neurolens did not close cleanly last time. Restore the "
                                   "last session (prompts, neuron sets, edits)?")
        if ans == QMessageBox.StandardButton.Yes:
            self.restore()
        else:
            self.autosave_path.unlink(missing_ok=True)

    def close(self) -> None:
        """A clean exit leaves no autosave behind (its presence at start means a crash)."""
        self.timer.stop()
        self.autosave_path.unlink(missing_ok=True)
