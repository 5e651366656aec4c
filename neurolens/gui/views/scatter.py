"""Key-space scatter: one point per prompt, coloured by prompt set, hover for the text,
shift-drag a lasso to define a new prompt set."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsPathItem

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


class LassoViewBox(pg.ViewBox):
    lasso = Signal(object)  # QPolygonF in view coordinates

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._pts: list[QPointF] = []
        self._item = None

    def mouseDragEvent(self, ev, axis=None):
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if ev.button() != Qt.MouseButton.LeftButton or not shift:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        if ev.isStart():
            self._pts = [self.mapSceneToView(ev.buttonDownScenePos())]
        self._pts.append(self.mapSceneToView(ev.scenePos()))
        path = QPainterPath(self._pts[0])
        for p in self._pts[1:]:
            path.lineTo(p)
        if self._item is None:
            self._item = QGraphicsPathItem()
            pen = QPen(Qt.GlobalColor.black)
            pen.setCosmetic(True)
            self._item.setPen(pen)
            self.addItem(self._item, ignoreBounds=True)
        self._item.setPath(path)
        if ev.isFinish():
            self.removeItem(self._item)
            self._item = None
            self.lasso.emit(QPolygonF(self._pts))
            self._pts = []


class KeySpaceScatter(pg.GraphicsLayoutWidget):
    lassoSelected = Signal(list)  # prompt indices

    def __init__(self, parent=None):
        super().__init__(parent=parent)
        self.setBackground("w")
        self.vb = LassoViewBox()
        self.plot = self.addPlot(viewBox=self.vb, title="key space (PCA)")
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.legend = self.plot.addLegend(offset=(5, 5))
        self.points = np.zeros((0, 2), np.float32)
        self.items: list = []
        self.vb.lasso.connect(self._on_lasso)
        self.method = "pca"
        self.inside: np.ndarray | None = None
        self.hint = pg.TextItem("run a prompt set: one point per prompt", color="#888",
                                anchor=(0.5, 0.5))
        self.vb.addItem(self.hint, ignoreBounds=True)
        self.hint.setPos(0.5, 0.5)
        self.vb.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)

    def set_points(self, pts: np.ndarray, sets: list[str], texts: list[str], method: str,
                   inside: np.ndarray | None = None) -> None:
        self.points = np.asarray(pts, np.float32)
        self.method = method
        if self.hint is not None and len(self.points):
            self.vb.removeItem(self.hint)
            self.hint = None
        self.inside = inside
        for it in self.items:
            self.plot.removeItem(it)
        self.items = []
        self.legend.clear()
        names = list(dict.fromkeys(sets))
        for k, name in enumerate(names):
            idx = [i for i, s in enumerate(sets) if s == name]
            col = PALETTE[k % len(PALETTE)]
            item = pg.ScatterPlotItem(
                x=self.points[idx, 0], y=self.points[idx, 1], size=9,
                brush=pg.mkBrush(*col, 200), pen=pg.mkPen(None), hoverable=True,
                hoverSize=13, data=[texts[i] for i in idx],
                tip=lambda x, y, data: data[:200])
            self.plot.addItem(item)
            self.legend.addItem(item, name)
            self.items.append(item)
        if inside is not None and inside.any():
            ring = pg.ScatterPlotItem(x=self.points[inside, 0], y=self.points[inside, 1], size=15,
                                      brush=None, pen=pg.mkPen("k", width=1.5))
            self.plot.addItem(ring)
            self.legend.addItem(ring, "inside cube")
            self.items.append(ring)
        self.plot.setTitle(f"key space ({method.upper()}, {len(self.points)} prompts)")
        if len(self.points):
            lo = [float(v) for v in self.points.min(0)]
            hi = [float(v) for v in self.points.max(0)]
            pad = [max(h - lo_, 1e-6) * 0.15 for lo_, h in zip(lo, hi)]
            self.vb.setRange(xRange=(lo[0] - pad[0], hi[0] + pad[0]),
                             yRange=(lo[1] - pad[1], hi[1] + pad[1]), padding=0)

    def set_status(self, text: str) -> None:
        self.plot.setTitle(text)

    def _on_lasso(self, poly: QPolygonF) -> None:
        idx = [i for i, (x, y) in enumerate(self.points)
               if poly.containsPoint(QPointF(float(x), float(y)), Qt.FillRule.OddEvenFill)]
        if idx:
            self.lassoSelected.emit(idx)

    def lasso_polygon(self, poly: QPolygonF) -> None:
        """Programmatic lasso (tests)."""
        self._on_lasso(poly)
