"""Neuron inspector: histogram per prompt set, top activations, per-neuron logit lens."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (QLabel, QListWidget, QSplitter, QTableWidget, QTableWidgetItem,
                               QTabWidget, QVBoxLayout, QWidget)
from PySide6.QtCore import Qt

from neurolens.gui.views.dashboard_view import DashboardView
from neurolens.gui.views.scatter import PALETTE
from neurolens.gui.views.snn_view import KernelView


class NeuronInspector(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.title = QLabel("Click a heatmap cell to inspect a neuron")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        split = QSplitter(Qt.Orientation.Vertical)
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "activation")
        self.hist.setLabel("left", "tokens")
        self.hist.addLegend(offset=(5, 5))
        self.hist.setMinimumHeight(140)
        split.addWidget(self.hist)
        self.top = QListWidget()
        split.addWidget(self.top)
        self.lens = QTableWidget(0, 2)
        self.lens.setHorizontalHeaderLabels(["promotes", "suppresses"])
        self.lens.horizontalHeader().setStretchLastSection(True)
        self.lens.verticalHeader().setVisible(False)
        self.lower = QTabWidget()           # the logit lens and the corpus dashboard, side by side
        self.lower.addTab(self.lens, "logit lens")
        self.dashboard = DashboardView()    # corpus examples from the model's neuron index
        self.lower.addTab(self.dashboard, "corpus examples")
        split.addWidget(self.lower)
        self.kernel = KernelView()          # spiking networks, in place of the logit lens
        self.kernel.setVisible(False)
        split.addWidget(self.kernel)
        split.setSizes([200, 90, 310, 200])     # the lens / corpus tabs get the most room
        lay.addWidget(split)

    def set_mode(self, mode: str) -> None:
        """``lens``: the logit lens below the histogram; ``kernel``: a spiking neuron's
        incoming kernels and template alignment."""
        self.lower.setVisible(mode == "lens")
        self.kernel.setVisible(mode == "kernel")
        self.hist.setLabel("left", "time bins" if mode == "kernel" else "tokens")

    def show_neuron(self, label: str, values_by_set: dict[str, np.ndarray],
                    top: list[tuple[float, str]]) -> None:
        self.title.setText(f"<b>{label}</b>")
        self.hist.clear()
        allv = np.concatenate([v for v in values_by_set.values() if v.size] or [np.zeros(1)])
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:
            hi = lo + 1e-3
        bins = np.linspace(lo, hi, 31)
        for k, (name, v) in enumerate(values_by_set.items()):
            if not v.size:
                continue
            h, _ = np.histogram(v, bins=bins)
            col = PALETTE[k % len(PALETTE)]
            self.hist.plot(bins, h, stepMode="center", fillLevel=0,
                           brush=pg.mkBrush(*col, 90), pen=pg.mkPen(col, width=1.5), name=name)
        self.top.clear()
        for v, where in top:
            self.top.addItem(f"{v:+.3f}  {where}")

    def show_lens(self, lens: dict) -> None:
        if "error" in lens:
            self.lens.setRowCount(1)
            self.lens.setItem(0, 0, QTableWidgetItem(lens["error"]))
            return
        rows = max(len(lens["promote"]), len(lens["suppress"]))
        self.lens.setRowCount(rows)
        for r in range(rows):
            for c, key in enumerate(("promote", "suppress")):
                if r < len(lens[key]):
                    tok, v = lens[key][r]
                    self.lens.setItem(r, c, QTableWidgetItem(f"{tok!r} {v:+.2f}"))
