"""Edit panel: turn the selected neurons into edits; list with toggles, notes, undo/redo."""

from __future__ import annotations

from collections import defaultdict

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QGroupBox, QHBoxLayout,
                               QInputDialog, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from neurolens.errors import SpecError
from neurolens.gui.edit_model import EditModel
from neurolens.gui.presenters.snn import SNN_OPS, layer_op
from neurolens.spec.edits import Prune, Scale, Set


class EditsPanel(QWidget):
    changed = Signal()

    def __init__(self, model: EditModel, parent=None):
        super().__init__(parent)
        self.model = model
        self.selection_provider = lambda: []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        self.op = QComboBox()
        self.op.addItems(["prune", "scale", "set"])
        self.op.currentTextChanged.connect(self._op_changed)
        row.addWidget(self.op)
        self.amount = QDoubleSpinBox()
        self.amount.setRange(-1e4, 1e4)
        self.amount.setDecimals(3)
        self.amount.setSingleStep(0.1)
        self.amount.setEnabled(False)
        row.addWidget(self.amount)
        self.positions = QComboBox()
        self.positions.setEditable(True)
        self.positions.addItems(["all", "last"])
        self.positions.setToolTip("all, last, or a list of positions like 0, 3, -1")
        row.addWidget(self.positions)
        lay.addLayout(row)
        self.add_btn = QPushButton("Add edit for selected neurons")
        self.add_btn.clicked.connect(self.add_for_selection)
        lay.addWidget(self.add_btn)
        self._build_layer_ops(lay)
        self.list = QListWidget()
        self.list.itemChanged.connect(self._item_changed)
        self.list.itemDoubleClicked.connect(lambda it: self.edit_note(self.list.row(it)))
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        for text, fn in (("Remove", self._remove_current), ("Note…", self._note_current),
                         ("Undo", self.undo), ("Redo", self.redo)):
            b = QPushButton(text)
            b.clicked.connect(fn)
            row.addWidget(b)
            setattr(self, f"{text.strip('…').lower()}_btn", b)
        lay.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.refresh()

    def _build_layer_ops(self, lay) -> None:
        """Spiking networks: the synapse and delay ops on a whole layer's synapses."""
        box = self.layer_box = QGroupBox("Synapses and delays of a layer")
        bl = QVBoxLayout(box)
        row = QHBoxLayout()
        self.layer_op = QComboBox()
        for op, spec in SNN_OPS.items():
            self.layer_op.addItem(spec[0], op)
        self.layer_op.currentIndexChanged.connect(self._layer_op_changed)
        row.addWidget(self.layer_op, 1)
        row.addWidget(QLabel("layer"))
        self.op_layer = QSpinBox()
        row.addWidget(self.op_layer)
        bl.addLayout(row)
        row = QHBoxLayout()
        self.param_label = QLabel("fraction")
        row.addWidget(self.param_label)
        self.param = QDoubleSpinBox()
        row.addWidget(self.param)
        row.addWidget(QLabel("seed"))
        self.op_seed = QSpinBox()
        self.op_seed.setRange(0, 2**31 - 1)
        row.addWidget(self.op_seed)
        b = QPushButton("Add")
        b.clicked.connect(self.add_layer_op)
        row.addWidget(b)
        bl.addLayout(row)
        lay.addWidget(box)
        box.setVisible(False)
        self._layer_op_changed()

    def set_kind(self, kind: str, n_layers: int = 0) -> None:
        """The loaded model's kind: a spiking network gets the layer ops; its neuron edits act
        on every time bin (no positions)."""
        snn = kind == "snn"
        self.layer_box.setVisible(snn)
        self.positions.setVisible(not snn)
        if snn:
            self.positions.setCurrentText("all")
            self.op_layer.setRange(0, max(0, n_layers - 1))

    def _layer_op_changed(self, *_) -> None:
        label, pname, default, lo, hi, dec, seeded = SNN_OPS[self.layer_op.currentData()]
        self.param_label.setText(pname or "")
        self.param.setVisible(pname is not None)
        self.param.setDecimals(dec)
        self.param.setRange(lo, hi)
        self.param.setSingleStep(0.05 if dec else 1)
        self.param.setValue(default)
        self.op_seed.setEnabled(seeded)

    def add_layer_op(self) -> int:
        try:
            op = layer_op(self.layer_op.currentData(), self.op_layer.value(), self.param.value(),
                          self.op_seed.value())
            op.check("edit")
        except (SpecError, ValueError) as e:
            self.status.setText(str(e))
            return 0
        self.model.add([op], f"add {op.op}")
        self.refresh()
        self.changed.emit()
        return 1

    def _op_changed(self, op: str) -> None:
        self.amount.setEnabled(op != "prune")
        self.amount.setValue(0.5 if op == "scale" else 0.0)

    def parse_positions(self):
        text = self.positions.currentText().strip()
        if text in ("all", "last"):
            return text
        try:
            return [int(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise SpecError(f"positions: expected all, last or integers, got '{text}'") from None

    def add_for_selection(self) -> int:
        sel = self.selection_provider()
        if not sel:
            self.status.setText("Select neurons first (click a heatmap cell).")
            return 0
        try:
            pos = self.parse_positions()
        except SpecError as e:
            self.status.setText(str(e))
            return 0
        if hasattr(sel, "by_site"):          # a Selection: neurons held as ranges per site
            by_site = sel.by_site()
        else:
            seen: dict[str, set[int]] = defaultdict(set)
            for site, idx in sel:
                seen[site].add(int(idx))
            by_site = {site: sorted(idx) for site, idx in seen.items()}
        op = self.op.currentText()
        ops = []
        for site, neurons in by_site.items():
            neurons = sorted(neurons)
            if op == "prune":
                ops.append(Prune(site, neurons, positions=pos))
            elif op == "scale":
                ops.append(Scale(site, neurons, factor=self.amount.value(), positions=pos))
            else:
                ops.append(Set(site, neurons, value=self.amount.value(), positions=pos))
        self.model.add(ops, f"add {op}")
        self.refresh()
        self.changed.emit()
        return len(ops)

    def add_ops(self, ops, label: str) -> None:
        self.model.add(list(ops), label)
        self.refresh()
        self.changed.emit()

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for op in self.model.ops:
            text = op.describe()
            if op.positions != "all" and op.op != "gate":
                text += f" (positions {op.positions})"
            if getattr(op, "factor", None) is not None and op.op == "scale":
                text += f" ×{op.factor:g}"
            if op.op == "set":
                text += f" = {op.value:g}"
            if op.note:
                text += f" — {op.note}"
            it = QListWidgetItem(text)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if op.enabled else Qt.CheckState.Unchecked)
            self.list.addItem(it)
        self.list.blockSignals(False)
        self.undo_btn.setEnabled(self.model.can_undo())
        self.redo_btn.setEnabled(self.model.can_redo())
        n = len(self.model.ops)
        on = sum(o.enabled for o in self.model.ops)
        self.status.setText(f"{n} edit(s), {on} enabled" if n else "no edits")

    def _item_changed(self, it: QListWidgetItem) -> None:
        row = self.list.row(it)
        self.model.set_enabled(row, it.checkState() == Qt.CheckState.Checked)
        self.refresh()
        self.changed.emit()

    def set_enabled(self, row: int, enabled: bool) -> None:
        self.list.item(row).setCheckState(Qt.CheckState.Checked if enabled
                                          else Qt.CheckState.Unchecked)

    def _remove_current(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.model.remove(row)
            self.refresh()
            self.changed.emit()

    def _note_current(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.edit_note(row)

    def edit_note(self, row: int, note: str | None = None) -> None:
        if note is None:
            note, ok = QInputDialog.getText(self, "Note", "Note for this edit:",
                                            QLineEdit.EchoMode.Normal, self.model.ops[row].note)
            if not ok:
                return
        self.model.set_note(row, note)
        self.refresh()
        self.changed.emit()

    def undo(self) -> None:
        if self.model.undo() is not None:
            self.refresh()
            self.changed.emit()

    def redo(self) -> None:
        if self.model.redo() is not None:
            self.refresh()
            self.changed.emit()
