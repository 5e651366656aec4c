"""The Attribute form (a tab beside Methods) and its results (a tab beside Neurons and Compare):
a diverging layer x neuron effect map, the token x neuron effects of one prompt, the top-K
table. Widgets only; the attribute controller fills and wires them."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from neurolens.gui.presenters.attribute import METHODS, AttributionView, table_cells
from neurolens.gui.views.heatmap import Heatmap


class AttributePanel(QWidget):
    """The form: clean prompts, answer and contrast, corruption, method, sites, K; the run,
    cancel, verify and top-K buttons."""

    attributeRequested = Signal()
    cancelRequested = Signal()
    verifyRequested = Signal()
    pruneRequested = Signal()
    selectRequested = Signal()
    cleanChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        intro = QLabel("Which neurons make the answer? Effects are signed: how much each "
                       "neuron's clean activation raises the metric.")
        intro.setWordWrap(True)
        intro.setStyleSheet("color: #555")
        lay.addWidget(intro)
        f = QFormLayout()
        self.clean = QComboBox()
        self.clean.setToolTip("the typed prompt (Prompt box) or a prompt set of the list")
        self.clean.currentTextChanged.connect(self.cleanChanged)
        f.addRow("clean", self.clean)
        self.answer = QLineEdit()
        self.answer.setPlaceholderText("e.g. 85 (blank: the set's answers)")
        f.addRow("answer", self.answer)
        self.contrast = QLineEdit()
        self.contrast.setPlaceholderText("e.g. 75 (blank: log p(answer))")
        self.contrast.setToolTip("the metric is logit(answer) − logit(contrast) where their "
                                 "tokens first differ")
        f.addRow("contrast", self.contrast)
        self.corruption = QComboBox()
        self.corruption.setToolTip("the corrupted run: a prompt of the same token length, a "
                                   "set paired row by row, or a mean / zero ablation")
        f.addRow("corrupted", self.corruption)
        self.corrupt_text = QLineEdit()
        self.corrupt_text.setPlaceholderText("e.g. Compute: 47+28=")
        f.addRow("", self.corrupt_text)
        self.method = QComboBox()
        self.method.addItems(list(METHODS.values()))
        f.addRow("method", self.method)
        self.kind = QComboBox()
        self.kind.setToolTip("the neuron site of every layer")
        f.addRow("sites", self.kind)
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 500)
        self.top_k.setValue(20)
        f.addRow("top K", self.top_k)
        lay.addLayout(f)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Attribute")
        self.run_btn.clicked.connect(self.attributeRequested)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancelRequested)
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.verify_btn = QPushButton("Verify top K exactly")
        self.verify_btn.setToolTip("exact activation patching of the top K neurons")
        self.verify_btn.clicked.connect(self.verifyRequested)
        self.prune_btn = QPushButton("Prune top K as edits")
        self.prune_btn.clicked.connect(self.pruneRequested)
        self.select_btn = QPushButton("Top K → neuron set")
        self.select_btn.clicked.connect(self.selectRequested)
        for b in (self.verify_btn, self.prune_btn, self.select_btn):
            b.setEnabled(False)
            lay.addWidget(b)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        lay.addStretch(1)

    def set_choices(self, clean: list[str], corrupt: list[str]) -> None:
        """Refill the combos, keeping the current choices where they still exist."""
        for combo, items in ((self.clean, clean), (self.corruption, corrupt)):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(items)
            if cur in items:
                combo.setCurrentText(cur)
            combo.blockSignals(False)

    def set_busy(self, busy: bool, has_result: bool) -> None:
        self.run_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        for b in (self.verify_btn, self.prune_btn, self.select_btn):
            b.setEnabled(has_result and not busy)


class AttributeResults(QWidget):
    """The result views: header line, layer x neuron effects, token x neuron effects of one
    prompt (the chosen row's layer), the top-K table."""

    rowActivated = Signal(str, int)         # site, neuron

    COLUMNS = ["site", "neuron", "effect", "exact"]

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.header = QLabel("Attribute an answer (the Attribute tab on the right) to see each "
                             "neuron's effect on it.")
        self.header.setWordWrap(True)
        lay.addWidget(self.header)
        split = QSplitter(Qt.Orientation.Vertical)
        self.layer_map = Heatmap("effect: layer × neuron", "neuron", "layer")
        self._hint("attribute an answer to fill this map", self.layer_map)
        split.addWidget(self.layer_map)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        self.token_map = Heatmap("effect: token × neuron", "neuron", "token")
        self._hint("one prompt, gradient methods: effects per token", self.token_map)
        bottom.addWidget(self.token_map)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.cellClicked.connect(self._clicked)
        bottom.addWidget(self.table)
        bottom.setSizes([560, 420])
        split.addWidget(bottom)
        split.setSizes([380, 420])
        lay.addWidget(split, 1)
        self.view: AttributionView | None = None

    @staticmethod
    def _hint(text: str, heatmap: Heatmap) -> None:
        if heatmap.hint is not None:
            heatmap.hint.setText(text)

    def show_result(self, view: AttributionView) -> None:
        self.view = view
        self.header.setText(view.header)
        self.layer_map.set_data(view.matrix, view.levels)
        self.layer_map.set_row_labels(view.row_labels)
        self.fill_table()

    def fill_table(self) -> None:
        v = self.view
        self.table.blockSignals(True)
        self.table.setRowCount(0 if v is None else len(v.rows))
        for r, row in enumerate(v.rows if v else []):
            for c, text in enumerate(table_cells(row)):
                it = QTableWidgetItem(text)
                if c >= 2:
                    it.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                        Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, it)
        self.table.resizeColumnsToContents()
        self.table.blockSignals(False)

    def show_tokens(self, rows, labels: list[str], levels, title: str) -> None:
        self.token_map.set_title(title)
        self.token_map.set_data(rows, levels)
        self.token_map.set_row_labels(labels)

    def _clicked(self, r: int, _c: int) -> None:
        if self.view is not None and 0 <= r < len(self.view.rows):
            row = self.view.rows[r]
            self.rowActivated.emit(row.site, row.neuron)

    def click_row(self, r: int) -> None:
        """Programmatic click on a table row (tests, keyboard)."""
        self.table.selectRow(r)
        self._clicked(r, 0)
