"""Spiking-network views: the rasters of one sample (input, each hidden layer) with the
readout's class probabilities over time (the baseline's beside them after Compare), a layer's
delay histogram and delay x weight scatter, and a neuron's incoming kernels with its delays
against each class's template (in the inspector). They draw what the presenters computed."""

from __future__ import annotations

import os

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from neurolens.gui.views.heatmap import CMAP
from neurolens.gui.views.scatter import PALETTE

RASTER_LUT = np.array([[255, 255, 255], [20, 20, 20]], np.uint8)


class _ClickImage(pg.ImageItem):
    def __init__(self, on_click):
        super().__init__(axisOrder="row-major")
        self._on_click = on_click

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            p = ev.pos()
            self._on_click(int(np.floor(p.x())), int(np.floor(p.y())))
            ev.accept()


class RasterPanel(pg.GraphicsLayoutWidget):
    """One column per run shown (the edited run; after Compare also the baseline): the input
    raster, each hidden layer's raster (neuron x time bin) and the readout's class
    probabilities over time. Clicking a raster picks a neuron."""

    neuronClicked = Signal(int, int)      # layer, neuron

    def __init__(self, parent=None):
        super().__init__(parent=parent)
        self.setBackground("w")
        self.columns: list[dict] = []
        self.shape: tuple | None = None
        self.potential = False
        self.data: dict[str, np.ndarray] = {}     # what the first column shows (tests)

    def configure(self, n_hidden: int, class_names: list[str], titles: tuple[str, ...],
                  potential: bool = False) -> None:
        """Lay out the plots for ``n_hidden`` hidden layers and the given columns (the hidden
        layers' spikes, or with ``potential`` their membrane potential)."""
        shape = (n_hidden, tuple(class_names), tuple(titles), potential)
        self.potential = potential
        if shape == self.shape:
            return
        self.shape = shape
        self.clear()
        self.columns = []
        for c, title in enumerate(titles):
            col: dict = {"rasters": [], "lines": []}
            first = None
            for r in range(n_hidden + 1):
                p = self.addPlot(row=r, col=c)
                what = "membrane potential" if potential else "spikes"
                p.setTitle(f"{title}: input" if r == 0 else f"{title}: layer {r - 1} {what}",
                           size="9pt")
                p.setLabel("left", "channel" if r == 0 else "neuron")
                p.invertY(True)
                img = _ClickImage(lambda x, y, layer=r - 1: self._clicked(layer, x, y))
                img.setLookupTable(CMAP.getLookupTable(nPts=256) if potential and r
                                   else RASTER_LUT)
                p.addItem(img)
                col["rasters"].append((p, img))
                if first is None:
                    first = p
                else:
                    p.setXLink(first)
            p = self.addPlot(row=n_hidden + 1, col=c)
            p.setTitle(f"{title}: readout class probability", size="9pt")
            p.setLabel("left", "p(class)")
            p.setLabel("bottom", "time bin")
            p.setYRange(0, 1)
            p.setXLink(first)
            if c == 0 and len(class_names) <= 12:
                p.addLegend(offset=(5, 2), labelTextSize="7pt", colCount=4)
            for k, name in enumerate(class_names):
                col["lines"].append(p.plot([], [], pen=pg.mkPen(PALETTE[k % len(PALETTE)],
                                                                width=1.6), name=name))
            col["probs"] = p
            self.columns.append(col)
        rows = self.ci.layout
        rows.setRowStretchFactor(0, 2)                  # the input's few channels
        for r in range(1, n_hidden + 1):
            rows.setRowStretchFactor(r, 4)
        rows.setRowStretchFactor(n_hidden + 1, 3)

    def _clicked(self, layer: int, t: int, neuron: int) -> None:
        if layer >= 0 and neuron >= 0:
            self.neuronClicked.emit(layer, neuron)

    def show_column(self, c: int, rasters: list[np.ndarray | None], probs: np.ndarray | None,
                    n_bins: int, label: str = "", chosen: int | None = None) -> None:
        """``rasters``: ``[time, neurons]`` per row (input first), None where not there yet;
        ``chosen``: the class drawn bold (the sample's label)."""
        if c >= len(self.columns):
            return
        col = self.columns[c]
        for (p, img), r in zip(col["rasters"], rasters):
            if r is None or not r.size:
                continue
            if self.potential and p is not col["rasters"][0][0]:
                amp = float(np.abs(r).max()) or 1.0
                img.setImage(np.ascontiguousarray(r.T), autoLevels=False, levels=(-amp, amp))
            else:
                img.setImage((r.T > 0).astype(np.uint8), autoLevels=False, levels=(0, 1))
            p.setLimits(xMin=0, xMax=max(n_bins, r.shape[0]), yMin=0, yMax=r.shape[1])
            if c == 0:
                self.data[p.titleLabel.text] = r
        if probs is not None and len(probs):
            t = np.arange(len(probs))
            for k, line in enumerate(col["lines"]):
                if k < probs.shape[1]:
                    line.setData(t, probs[:, k])
                    line.setPen(pg.mkPen(PALETTE[k % len(PALETTE)],
                                         width=3.2 if k == chosen else 1.2))
            col["probs"].setXRange(0, n_bins, padding=0)
            if c == 0:
                self.data["probs"] = probs
        if label:
            col["probs"].setTitle(label, size="9pt")

    def has_data(self) -> bool:
        return bool(self.data)


class DelayPanel(QWidget):
    """A layer's delay histogram and delay x weight scatter (the chosen neuron's synapses
    marked)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("delays: load a spiking network")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        row = QHBoxLayout()
        self.hist = pg.PlotWidget(background="w", title="delay histogram")
        self.hist.setLabel("bottom", "delay (bins)")
        self.hist.setLabel("left", "synapses")
        row.addWidget(self.hist)
        self.scatter = pg.PlotWidget(background="w", title="delay × weight")
        self.scatter.setLabel("bottom", "delay (bins)")
        self.scatter.setLabel("left", "weight")
        self.scatter.getAxis("left").enableAutoSIPrefix(False)
        row.addWidget(self.scatter)
        lay.addLayout(row, 1)
        self.points = np.zeros((0, 2), np.float32)
        self.counts = np.zeros(0)

    def show_layer(self, title: str, bins: np.ndarray, counts: np.ndarray, points: np.ndarray,
                   chosen: np.ndarray | None = None) -> None:
        self.title.setText(title)
        self.counts, self.points = counts, points
        self.hist.clear()
        self.hist.addItem(pg.BarGraphItem(x=bins, height=counts, width=0.9,
                                          brush=pg.mkBrush(70, 110, 200, 180)))
        self.scatter.clear()
        self.scatter.plot(points[:, 0], points[:, 1], pen=None, symbol="o", symbolSize=4,
                          symbolPen=None, symbolBrush=pg.mkBrush(70, 110, 200, 110))
        if chosen is not None and len(chosen):
            self.scatter.plot(chosen[:, 0], chosen[:, 1], pen=None, symbol="o", symbolSize=8,
                              symbolPen=pg.mkPen("k"), symbolBrush=pg.mkBrush(220, 60, 60))


class KernelView(QWidget):
    """A neuron's incoming kernels (input synapse x delay) and, where the task has class
    templates, how well its delays line each class's motif up (the spread of the arrivals)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.kernel = pg.PlotWidget(background="w", title="incoming kernels")
        self.kernel.setLabel("bottom", "delay (bins)")
        self.kernel.setLabel("left", "input")
        self.kernel.invertY(True)
        self.img = pg.ImageItem(axisOrder="row-major")
        self.img.setLookupTable(CMAP.getLookupTable(nPts=256))
        self.kernel.addItem(self.img)
        lay.addWidget(self.kernel, 3)
        self.align = pg.PlotWidget(background="w", title="delays vs class templates")
        self.align.setLabel("bottom", "class")
        self.align.setLabel("left", "arrival − mean (bins)")
        lay.addWidget(self.align, 2)
        self.data: np.ndarray | None = None
        self.spread: np.ndarray | None = None

    def show_kernel(self, title: str, kernel: np.ndarray, note: str = "") -> None:
        """``kernel``: ``[inputs, delay 0..K-1]``."""
        self.data = kernel
        amp = float(np.abs(kernel).max()) or 1.0
        self.img.setImage(kernel, autoLevels=False, levels=(-amp, amp))
        self.kernel.setTitle(title, size="9pt")
        self.kernel.setLimits(xMin=0, xMax=kernel.shape[1], yMin=0, yMax=kernel.shape[0])
        self.kernel.setRange(xRange=(0, kernel.shape[1]), yRange=(0, kernel.shape[0]),
                             padding=0)
        self.note.setText(note)

    def show_alignment(self, align: dict | None, class_names: list[str]) -> None:
        """Per class, where each excitatory input's motif spike arrives (template offset +
        delay, relative to the mean arrival) and the weighted spread: a detector of a class
        has that class's arrivals in one bin."""
        self.align.clear()
        self.spread = None if align is None else align["spread"]
        if align is None:
            self.align.setTitle("delays vs class templates: the first layer's neurons of a "
                                "task with templates", size="8pt")
            return
        spread, best, rel = align["spread"], align["best"], align["relative"]
        for k in range(len(spread)):
            col = (220, 60, 60) if k == best else (120, 120, 120)
            y = rel[k]
            x = k + np.linspace(-0.25, 0.25, len(y)) if len(y) > 1 else np.full(len(y), k)
            self.align.plot(x, y, pen=None, symbol="o", symbolSize=5, symbolPen=None,
                            symbolBrush=pg.mkBrush(*col, 200))
        x = np.arange(len(spread))
        self.align.addItem(pg.ErrorBarItem(x=x, y=np.zeros(len(x)), height=2 * spread,
                                           beam=0.3, pen=pg.mkPen((40, 40, 40), width=1.5)))
        names = [class_names[k] if k < len(class_names) else str(k) for k in x]
        prefix = os.path.commonprefix(names) if len(names) > 1 else ""
        if prefix and all(n[len(prefix):] for n in names):    # motif0.. motif7: 0 .. 7
            names = [n[len(prefix):] for n in names]
        self.align.setLabel("bottom", f"class ({prefix}…)" if prefix else "class")
        self.align.getAxis("bottom").setTicks([list(zip(x, names))])
        name = class_names[best] if best < len(class_names) else best
        self.align.setTitle(f"motif arrivals per class (± spread; tightest: {name})",
                            size="9pt")
