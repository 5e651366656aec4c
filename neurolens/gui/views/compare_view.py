"""Before/after view: texts side by side with the first divergence and changed tokens marked,
per-token probability of the chosen token in both runs, skill metrics per prompt set."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QLabel, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QTextBrowser, QVBoxLayout, QHBoxLayout, QWidget)

from neurolens.gui.presenters import results


class CompareView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.summary = QLabel("Run ▸ Compare runs the prompts with and without the enabled "
                              "edits (same seed and settings).")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        split = QSplitter(Qt.Orientation.Vertical)
        self.texts = QTextBrowser()
        split.addWidget(self.texts)
        bottom = QWidget()
        bl = QHBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("prompt"))
        self.which = QSpinBox()
        self.which.valueChanged.connect(self._plot)
        row.addWidget(self.which)
        row.addStretch(1)
        ll.addLayout(row)
        self.plot = pg.PlotWidget(background="w", title="probability of the chosen token")
        self.plot.addLegend(offset=(5, 5))
        self.plot.setLabel("bottom", "generated token")
        self.plot.setYRange(0, 1)
        ll.addWidget(self.plot)
        bl.addWidget(left, 3)
        self.metrics = QTableWidget(0, 4)
        self.metrics.setHorizontalHeaderLabels(["prompt set", "before", "after", "relative"])
        self.metrics.verticalHeader().setVisible(False)
        bl.addWidget(self.metrics, 2)
        split.addWidget(bottom)
        split.setSizes([420, 300])
        lay.addWidget(split, 1)
        self.result: dict | None = None

    def show_result(self, r: dict) -> None:
        self.result = r
        self.summary.setText(results.compare_summary(r))
        self.texts.setHtml(results.compare_table_html(r["items"]))
        self.which.setRange(0, max(0, len(r["items"]) - 1))
        self._plot()
        rows = results.metric_rows(r.get("metrics", []))
        self.metrics.setRowCount(len(rows))
        for k, row in enumerate(rows):
            for c, v in enumerate(row):
                self.metrics.setItem(k, c, QTableWidgetItem(v))

    def show_classes(self, r: dict, names: list[str]) -> None:
        """A spiking network's comparison: accuracy per class before / after, the samples whose
        prediction changed, one sample's probability of its label over time before / after."""
        from neurolens.gui.presenters import snn
        self.result = r
        self.summary.setText(snn.compare_summary(r))
        self.texts.setHtml(snn.compare_html(r, names))
        self.which.setRange(0, max(0, r["n"] - 1))
        self.plot.setLabel("bottom", "time bin")
        self.plot.setTitle("probability of the sample's label (else its first prediction)")
        self._plot()
        rows = snn.compare_rows(r)
        self.metrics.setHorizontalHeaderLabels(["class", "before", "after", "change"])
        self.metrics.setRowCount(len(rows))
        for k, row in enumerate(rows):
            for c, v in enumerate(row):
                self.metrics.setItem(k, c, QTableWidgetItem(v))

    def _plot_classes(self) -> None:
        r = self.result
        i = min(self.which.value(), r["n"] - 1)
        k = r["labels"][i] if r.get("labels") is not None else r["before"][i]
        for name, key, col in (("before", "probs_before", (60, 60, 200)),
                               ("after", "probs_after", (220, 60, 60))):
            p = r[key][i][:, k]
            self.plot.plot(np.arange(len(p)), p, pen=pg.mkPen(col, width=2), name=name)

    def _plot(self) -> None:
        self.plot.clear()
        if self.result and "probs_before" in self.result:
            self._plot_classes()
            return
        if not self.result or not self.result["items"]:
            return
        it = self.result["items"][min(self.which.value(), len(self.result["items"]) - 1)]
        for (name, p), col in zip(results.token_probabilities(it),
                                  ((60, 60, 200), (220, 60, 60))):
            if p.size:
                self.plot.plot(np.arange(len(p)), p, pen=pg.mkPen(col, width=2), symbol="o",
                               symbolSize=6, symbolBrush=col, name=name)
