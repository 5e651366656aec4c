"""Heatmap view with click, shift-click and shift-drag rectangle selection.

Where a screen pixel covers several neurons a click selects the strongest of them (the one the
pixel shows, :mod:`neurolens.gui.presenters.pick`), and a hover read-out names it before the
click."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsRectItem

from neurolens.gui.presenters.pick import cell_text, pick_column

CMAP = pg.colormap.get("CET-D1")  # diverging blue-white-red: sign matters for activations


class SelectViewBox(pg.ViewBox):
    clicked = Signal(float, float, bool)            # x, y, additive (shift)
    rectSelected = Signal(float, float, float, float)

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._rect_item = None
        self.setMouseMode(pg.ViewBox.PanMode)

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            additive = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
            self.clicked.emit(p.x(), p.y(), additive)
            ev.accept()
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None):
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if ev.button() != Qt.MouseButton.LeftButton or not shift:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        a = self.mapSceneToView(ev.buttonDownScenePos())
        b = self.mapSceneToView(ev.scenePos())
        if self._rect_item is None:
            self._rect_item = QGraphicsRectItem()
            pen = QPen(Qt.GlobalColor.black)
            pen.setCosmetic(True)
            pen.setStyle(Qt.PenStyle.DashLine)
            self._rect_item.setPen(pen)
            self.addItem(self._rect_item, ignoreBounds=True)
        self._rect_item.setRect(QRectF(QPointF(a.x(), a.y()), QPointF(b.x(), b.y())).normalized())
        if ev.isFinish():
            self.removeItem(self._rect_item)
            self._rect_item = None
            self.rectSelected.emit(min(a.x(), b.x()), min(a.y(), b.y()),
                                   max(a.x(), b.x()), max(a.y(), b.y()))


class Heatmap(pg.GraphicsLayoutWidget):
    """rows x cols image; emits cell picks. Levels are set by the caller (stable colours)."""

    cellClicked = Signal(int, int, bool)        # row, col, additive
    cellsSelected = Signal(list)                # [(row, col), ...]
    AXIS_TEXT_PX = 60                           # starting width of the left axes' labels

    def __init__(self, title: str, xlabel: str, ylabel: str, parent=None):
        super().__init__(parent=parent)
        self.setBackground("w")
        self._token_rows = ylabel == "token"
        self.vb = SelectViewBox()
        self.plot = self.addPlot(viewBox=self.vb, title=title)
        self.plot.setLabel("bottom", xlabel)
        self.plot.setLabel("left", ylabel)
        self.vb.invertY(True)
        self.img = pg.ImageItem(axisOrder="row-major")
        self.img.setLookupTable(CMAP.getLookupTable(nPts=256))
        self.plot.addItem(self.img)
        self.bar = pg.ColorBarItem(values=(-1, 1), colorMap=CMAP, interactive=False, width=12)
        self.bar.setImageItem(self.img, insert_in=self.plot)
        self.marks = pg.ScatterPlotItem(size=9, pen=pg.mkPen("k", width=1.5), brush=None,
                                        symbol="s")
        self.plot.addItem(self.marks)
        # axes repaint from a cached pixmap unless their range or ticks change: a redraw while
        # a model streams then repaints the image, not every tick label
        cache = QGraphicsItem.CacheMode.DeviceCoordinateCache
        for name in ("left", "bottom", "top", "right"):
            self.plot.getAxis(name).setCacheMode(cache)
        self.bar.axis.setCacheMode(cache)
        self.data = np.zeros((0, 0), np.float32)
        self.levels = (-1.0, 1.0)
        self.vb.clicked.connect(self._on_click)
        self.vb.rectSelected.connect(self._on_rect)
        self._shape = None
        self._ticks = None
        self._marks: list = []
        self._labels: list[str] = []
        # the hover read-out: the cell a click at the cursor would select, in the view's
        # top-left corner (pixel coordinates of the view box, not data coordinates)
        self.readout = pg.TextItem("", color="k", fill=pg.mkBrush(255, 255, 255, 220),
                                   anchor=(0, 0))
        self.readout.setParentItem(self.vb)
        self.readout.setZValue(1000)
        self.readout.setPos(2, 2)
        self.readout.hide()
        self._hover_cell = None
        self._hover_pos = None
        self.scene().sigMouseMoved.connect(self._on_move)
        # until the first run fills it, the map says how to fill it instead of showing empty
        # axes scaled around zero
        self.hint = pg.TextItem("run prompts to fill this map", color="#888", anchor=(0.5, 0.5))
        self.vb.addItem(self.hint, ignoreBounds=True)
        self.hint.setPos(0.5, 0.5)
        self.vb.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setTicks([[], []])
        # the row-label and colour-bar axes start wide enough for typical labels and only ever
        # grow: the first data (or a shorter label) then does not re-lay out the plot. Such a
        # re-layout at the first run repainted both maps five times in one pass (~70 ms).
        for ax in (self.plot.getAxis("left"), self.bar.axis):
            ax.textWidth = max(ax.textWidth, self.AXIS_TEXT_PX)
            ax.setStyle(autoReduceTextSpace=False)      # applies the width

    def set_data(self, data: np.ndarray, levels: tuple[float, float]) -> None:
        if self.hint is not None and data.size:
            self.vb.removeItem(self.hint)
            self.hint = None
            for name in ("left", "bottom"):
                self.plot.getAxis(name).setTicks(None)
        self.data = data
        self.img.setImage(data, autoLevels=False, levels=levels)
        # unchanged levels, ticks and marks are not set again: each set repaints an axis, and
        # axis painting is the costliest part of a redraw while a model streams
        if levels != self.levels:
            self.bar.setLevels(levels)
        self.levels = levels
        if data.shape != self._shape:
            self._shape = data.shape
            self.vb.setLimits(xMin=-0.5, xMax=data.shape[1] + 0.5, yMin=-0.5,
                              yMax=data.shape[0] + 0.5)
            self.vb.setRange(xRange=(0, max(1, data.shape[1])), yRange=(0, max(1, data.shape[0])),
                             padding=0)
        if self._hover_pos is not None:         # new values under a resting cursor
            self._on_move(self._hover_pos)

    def preshape(self, rows: int | None, cols: int) -> None:
        """Lay the empty map out for data of ``rows`` x ``cols`` (``rows`` None: the columns
        only), so that the first data changes no view range. At the first run such a change
        re-laid out both maps and repainted them five times in one pass (~70 ms)."""
        if self.hint is None or cols <= 0:
            return
        if rows is None:
            self.vb.setLimits(xMin=-0.5, xMax=cols + 0.5)
            self.vb.setRange(xRange=(0, cols), padding=0)
            self.hint.setPos(cols / 2, 0.5)
            return
        self._shape = (rows, cols)
        self.vb.setLimits(xMin=-0.5, xMax=cols + 0.5, yMin=-0.5, yMax=rows + 0.5)
        self.vb.setRange(xRange=(0, cols), yRange=(0, max(1, rows)), padding=0)
        self.hint.setPos(cols / 2, rows / 2)

    def has_data(self) -> bool:
        return self.data.size > 0 and bool(np.any(self.data != 0))

    def set_title(self, title: str) -> None:
        self.plot.setTitle(title)

    def set_row_labels(self, labels: list[str]) -> None:
        step = max(1, len(labels) // 24)
        self._labels = list(labels)
        ticks = [(i + 0.5, labels[i]) for i in range(0, len(labels), step)]
        if ticks != self._ticks:
            self._ticks = ticks
            self.plot.getAxis("left").setTicks([ticks])

    def clear_row_labels(self) -> None:
        self._ticks = None
        self._labels = []
        self.plot.getAxis("left").setTicks(None)

    def mark(self, cells: list[tuple[int, int]]) -> None:
        if cells == self._marks:
            return
        self._marks = list(cells)
        self.marks.setData([c + 0.5 for _, c in cells], [r + 0.5 for r, _ in cells])

    def _cell(self, x: float, y: float, span: float = 0.0) -> tuple[int, int] | None:
        """The cell a click at view (x, y) selects: in its row, the strongest column of those
        a screen pixel ``span`` columns wide covers (``span`` <= 1: the column under x)."""
        r = int(np.floor(y))
        if not 0 <= r < self.data.shape[0]:
            return None
        c = pick_column(self.data[r], x, span)
        return None if c is None else (r, c)

    def pixel_span(self) -> float:
        """How many columns one screen pixel covers at the current zoom."""
        return float(self.vb.viewPixelSize()[0])

    def _on_click(self, x, y, additive):
        cell = self._cell(x, y, self.pixel_span())
        if cell is not None:
            self.cellClicked.emit(cell[0], cell[1], additive)

    def hover_text(self) -> str:
        return self.readout.textItem.toPlainText() if self.readout.isVisible() else ""

    def _on_move(self, scene_pos) -> None:
        self._hover_pos = scene_pos
        cell = None
        if self.data.size and self.vb.sceneBoundingRect().contains(scene_pos):
            p = self.vb.mapSceneToView(scene_pos)
            cell = self._cell(p.x(), p.y(), self.pixel_span())
        if cell is None:
            self.readout.hide()
            self._hover_cell = None
            return
        r, c = cell
        label = self._labels[r] if r < len(self._labels) else str(r)
        text = cell_text(label, c, float(self.data[r, c]), token=self._token_rows)
        if (cell, text) != self._hover_cell:
            self._hover_cell = (cell, text)
            self.readout.setText(text)
        self.readout.show()

    def leaveEvent(self, ev):
        self.readout.hide()
        self._hover_cell = self._hover_pos = None
        super().leaveEvent(ev)

    def _on_rect(self, x0, y0, x1, y1):
        rows, cols = self.data.shape
        r0, r1 = max(0, int(np.floor(y0))), min(rows - 1, int(np.floor(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(cols - 1, int(np.floor(x1)))
        cells = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
        if cells:
            self.cellsSelected.emit(cells)

    def click_cell(self, row: int, col: int, additive: bool = False) -> None:
        """Programmatic click (tests, keyboard): selects exactly this cell."""
        if self._cell(col + 0.5, row + 0.5) is not None:
            self.cellClicked.emit(row, col, additive)
