"""The prompt panel: the prompt list (typed, shipped and file sets), its table, the set pickers
that follow it (view bar, Methods form), and lasso sets from the key-space scatter."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QFileDialog, QTableWidgetItem

from neurolens.gui.controllers import Controller
from neurolens.gui.presenters.prompts import PromptList
from neurolens.gui.views.scatter import PALETTE


class PromptController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.list = PromptList()

    def add(self, prompts: list[str], set_name: str) -> None:
        self.list.add(prompts, set_name)
        self.changed()

    def replace(self, rows, answers: dict | None = None) -> None:
        self.list.replace(rows, answers)
        self.fill_table()

    def clear(self) -> None:
        self.list.clear()
        self.changed()

    def add_typed(self) -> None:
        text = self.w.prompt_edit.toPlainText()
        if text.strip():
            self.add([text], self.w.set_name.text())
            self.w.run_list.setChecked(True)

    def load_chosen_set(self) -> None:
        """The prompt panel's Load button: the chosen set the app ships."""
        s = self.w.family.shipped()[self.w.shipped.currentIndex()]
        self.load_shipped(s.file, self.w.shipped_n.value(), split=s.split, set_name=s.name)

    def load_shipped(self, skill: str, n: int = 24, split: str | None = "probe",
                     set_name: str | None = None) -> None:
        from neurolens.evals.skills import load_prompt_set
        try:
            rows = load_prompt_set(skill, split, limit=n)
        except Exception as e:  # noqa: BLE001
            self.w.show_error(str(e))
            return
        self.add_answered([(r["prompt"], r.get("answer")) for r in rows], set_name or skill)

    def load_file(self, path: str, set_name: str | None = None) -> None:
        from neurolens.spec.prompts import read_prompt_rows
        try:
            rows = read_prompt_rows(path)
        except Exception as e:  # noqa: BLE001
            self.w.show_error(str(e))
            return
        self.add_answered(rows, set_name or Path(path).stem)

    def add_answered(self, rows: list[tuple[str, str | None]], set_name: str) -> None:
        """Add (prompt, answer) rows as a set to run; the answers, where given, stop, score
        (Compare) and probe (Neuron Adjust) their prompts."""
        self.list.add_answered(rows, set_name)
        self.changed()
        self.w.run_list.setChecked(True)

    def file_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self.w, "Load prompts", "",
                                           "Prompts (*.jsonl *.txt);;All files (*)")
        if f:
            self.load_file(f)

    def changed(self) -> None:
        self.fill_table()
        self.w.mark_dirty()

    def fill_table(self) -> None:
        """The prompt table, the view bar's set pickers and the Methods form's."""
        w = self.w
        names = self.list.set_names()
        fill_set_table(w, self.list.table_rows(), names)
        w.methods_panel.set_names(names)

    def row_chosen(self, row: int) -> None:
        """A prompt table row was chosen (the views keep the prompt of the run they show)."""

    def define_set(self, indices: list[int], name: str | None = None) -> str:
        """Lasso result: move the chosen prompts of the last run into a new named set."""
        req = self.w.runs.req
        if req is None:
            return ""
        name = self.list.move_to_set(
            [req.prompts[i] for i in indices if i < len(req.prompts)], name)
        self.fill_table()
        self.w.status.setText(f"{len(indices)} prompts now form the set '{name}'")
        return name


def fill_set_table(w, rows: list[tuple[str, str, int]], names: list[str]) -> None:
    """The prompt (or sample) table, one row per (set, text, colour index), and the view bar's
    A/B set pickers (kept where they still exist; B differs from A when it can)."""
    w.prompt_table.setRowCount(len(rows))
    for r, (s, text, k) in enumerate(rows):
        a = QTableWidgetItem(s)
        a.setForeground(QColor(*PALETTE[k % len(PALETTE)]))
        w.prompt_table.setItem(r, 0, a)
        w.prompt_table.setItem(r, 1, QTableWidgetItem(text))
    for combo in (w.set_a, w.set_b):
        cur = combo.currentText()
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(names)
        if cur in names:
            combo.setCurrentText(cur)
        combo.blockSignals(False)
    if len(names) > 1 and w.set_b.currentText() == w.set_a.currentText():
        w.set_b.setCurrentIndex(1)

