"""Heatmap view with click, shift-click and shift-drag rectangle selection, wheel zoom.

Where a screen pixel covers several neurons a click selects the strongest of them (the one the
pixel shows, :mod:`neurolens.gui.presenters.pick`), and a hover read-out names it before the
click. A map wider than its view is drawn downsampled (bins of neurons, each its strongest value
or its mean: the context menu's choice) from the visible columns only; the data keep their full
resolution for clicks, the read-out and selections. The wheel zooms the neuron axis around the
cursor, a double-click (or the context menu) shows the whole map again."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QActionGroup, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsRectItem, QMenu

from neurolens.gui.presenters.pick import bin_width, cell_text, downsample, pick_column
from neurolens.gui.presenters.selection import NeuronRanges

CMAP = pg.colormap.get("CET-D1")  # diverging blue-white-red: sign matters for activations


#: a run of at most this many selected neurons is marked cell by cell, a longer one as a box
MARK_CELLS = 8
#: the narrowest zoom: this many neurons across the view
MIN_COLUMNS = 8
REDUCE_TEXT = {"max": "strongest", "mean": "mean"}


class SelectViewBox(pg.ViewBox):
    clicked = Signal(float, float, bool)            # x, y, additive (shift)
    doubleClicked = Signal()
    rectSelected = Signal(float, float, float, float)

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._rect_item = None
        self.setMouseMode(pg.ViewBox.PanMode)
        self.setMouseEnabled(x=True, y=False)       # wheel and drag: the neuron axis only
        self.context_menu: QMenu | None = None

    def raiseContextMenu(self, ev):
        if self.context_menu is not None:
            self.context_menu.popup(ev.screenPos().toPoint())

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton and ev.double():
            self.doubleClicked.emit()
            ev.accept()
        elif ev.button() == Qt.MouseButton.LeftButton:
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
    cellsSelected = Signal(list)                # [(row, col), ...] (callers may emit it)
    blockSelected = Signal(int, int, int, int)  # a shift-drag: rows r0..r1, columns c0..c1
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
        pen = QPen(Qt.GlobalColor.black)
        pen.setCosmetic(True)
        pen.setWidthF(1.5)
        self.mark_boxes = QGraphicsPathItem()       # long runs of selected neurons
        self.mark_boxes.setPen(pen)
        self.plot.addItem(self.mark_boxes, ignoreBounds=True)
        # axes repaint from a cached pixmap unless their range or ticks change: a redraw while
        # a model streams then repaints the image, not every tick label
        cache = QGraphicsItem.CacheMode.DeviceCoordinateCache
        for name in ("left", "bottom", "top", "right"):
            self.plot.getAxis(name).setCacheMode(cache)
        self.bar.axis.setCacheMode(cache)
        self.data = np.zeros((0, 0), np.float32)
        self.levels = (-1.0, 1.0)
        self.vb.clicked.connect(self._on_click)
        self.vb.doubleClicked.connect(self.reset_zoom)
        self.vb.rectSelected.connect(self._on_rect)
        self._shape = None
        self._ticks = None
        self._segments: list[tuple[int, int, int]] = []     # marked (row, start, stop)
        # the drawn image: mode (max / mean per bin), bins (origin, f), what it was made from
        self.mode = "max"
        self._xlabel = xlabel
        self.bins = (0, 1)
        self._drawn = None
        self.vb.sigXRangeChanged.connect(self._redraw)
        self.vb.sigResized.connect(self._redraw)
        self._build_menu()
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
        # unchanged levels, ticks and marks are not set again: each set repaints an axis, and
        # axis painting is the costliest part of a redraw while a model streams
        if levels != self.levels:
            self.bar.setLevels(levels)
        self.levels = levels
        if data.shape != self._shape:
            self._shape = data.shape
            self._set_limits(data.shape[1], data.shape[0])
            self.vb.setRange(xRange=(0, max(1, data.shape[1])), yRange=(0, max(1, data.shape[0])),
                             padding=0)
        self._drawn = None
        self._redraw()
        if self._hover_pos is not None:         # new values under a resting cursor
            self._on_move(self._hover_pos)

    def preshape(self, rows: int | None, cols: int) -> None:
        """Lay the empty map out for data of ``rows`` x ``cols`` (``rows`` None: the columns
        only), so that the first data changes no view range. At the first run such a change
        re-laid out both maps and repainted them five times in one pass (~70 ms)."""
        if self.hint is None or cols <= 0:
            return
        if rows is None:
            self._set_limits(cols)
            self.vb.setRange(xRange=(0, cols), padding=0)
            self.hint.setPos(cols / 2, 0.5)
            return
        self._shape = (rows, cols)
        self._set_limits(cols, rows)
        self.vb.setRange(xRange=(0, cols), yRange=(0, max(1, rows)), padding=0)
        self.hint.setPos(cols / 2, rows / 2)

    def _set_limits(self, cols: int, rows: int | None = None) -> None:
        lim = {"xMin": -0.5, "xMax": cols + 0.5, "minXRange": min(MIN_COLUMNS, max(cols, 1)),
               "maxXRange": cols + 1}
        if rows is not None:
            lim.update(yMin=-0.5, yMax=rows + 0.5)
        self.vb.setLimits(**lim)

    # -- display: the visible columns, downsampled to the view's width --------------------------
    def _build_menu(self) -> None:
        menu = QMenu()
        group = QActionGroup(menu)
        self.reduce_actions = {}
        for mode, text in (("max", "Per pixel: strongest neuron (max |value|)"),
                           ("mean", "Per pixel: mean of its neurons")):
            act = menu.addAction(text)
            act.setCheckable(True)
            act.setChecked(mode == self.mode)
            act.triggered.connect(lambda _=False, m=mode: self.set_reduce(m))
            group.addAction(act)
            self.reduce_actions[mode] = act
        menu.addSeparator()
        menu.addAction("Show all neurons (double-click)").triggered.connect(self.reset_zoom)
        self.vb.context_menu = self.menu = menu

    def set_reduce(self, mode: str) -> None:
        """Draw each bin of neurons as its strongest value ("max") or its mean ("mean")."""
        if mode not in self.reduce_actions:
            raise ValueError(f"mode: one of {sorted(self.reduce_actions)}, got {mode!r}")
        self.mode = mode
        self.reduce_actions[mode].setChecked(True)
        self._drawn = None
        self._redraw()

    def reset_zoom(self) -> None:
        """Show every neuron again."""
        cols = self._shape[1] if self._shape else 0
        if cols:
            self.vb.setRange(xRange=(0, cols), padding=0)

    def visible_columns(self) -> tuple[float, float]:
        return tuple(self.vb.viewRange()[0])

    def _redraw(self, *_) -> None:
        """Draw the visible columns, in bins of f neurons where they outnumber the pixels."""
        data = self.data
        if not data.size:
            return
        n = data.shape[1]
        x0, x1 = self.vb.viewRange()[0]
        px = self.vb.width() * self.devicePixelRatioF()
        f = bin_width(max(1.0, min(x1, n) - max(x0, 0.0)), px)
        start = max(0, int(np.floor(max(x0, 0.0) / f)) * f)
        stop = min(n, int(np.ceil(min(x1, n) / f)) * f)
        if stop <= start:
            start, stop = 0, n
        key = (start, stop, f, self.mode, self.levels)
        if key == self._drawn:
            return
        self._drawn = key
        image = downsample(data, start, stop, f, self.mode)
        self.img.setImage(image, autoLevels=False, levels=self.levels)
        self.img.setRect(QRectF(start, 0, image.shape[1] * f, data.shape[0]))
        self.bins = (0, f)
        # the axis says when a pixel stands for several neurons (set only when it changes:
        # a new label re-lays out the plot)
        text = self._xlabel
        if f > 1:
            text += f" (1 pixel: {REDUCE_TEXT[self.mode]} of {f} neurons)"
        if text != self.plot.getAxis("bottom").labelText:
            self.plot.setLabel("bottom", text)

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
        """Mark cells (row, column)."""
        by_row: dict[int, list[int]] = {}
        for r, c in cells:
            by_row.setdefault(int(r), []).append(int(c))
        self.mark_ranges([(r, a, b) for r, cols in sorted(by_row.items())
                          for a, b in NeuronRanges.from_indices(cols).ranges()])

    def mark_ranges(self, segments: list[tuple[int, int, int]]) -> None:
        """Mark runs of cells (row, start, stop): a short run cell by cell, a long one as one
        box (a whole layer selected is one box, not 14,336 markers)."""
        segments = [(int(r), int(a), int(b)) for r, a, b in segments if b > a]
        if segments == self._segments:
            return
        self._segments = segments
        xs, ys = [], []
        path = QPainterPath()
        for r, a, b in segments:
            if b - a <= MARK_CELLS:
                xs += [c + 0.5 for c in range(a, b)]
                ys += [r + 0.5] * (b - a)
            else:
                path.addRect(QRectF(a, r, b - a, 1))
        self.marks.setData(xs, ys)
        self.mark_boxes.setPath(path)

    @property
    def _marks(self) -> list[tuple[int, int]]:
        """The marked cells, one by one."""
        return [(r, c) for r, a, b in self._segments for c in range(a, b)]

    def _cell(self, x: float, y: float, span: float = 0.0) -> tuple[int, int] | None:
        """The cell a click at view (x, y) selects: in its row, the strongest column of those
        a screen pixel ``span`` columns wide covers (``span`` <= 1: the column under x)."""
        r = int(np.floor(y))
        if not 0 <= r < self.data.shape[0]:
            return None
        c = pick_column(self.data[r], x, span, self.bins)
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
        """A shift-drag: the block of cells it covers (rows and columns both included), as its
        bounds, not one entry per cell."""
        rows, cols = self.data.shape
        r0, r1 = max(0, int(np.floor(y0))), min(rows - 1, int(np.floor(y1)))
        c0, c1 = max(0, int(np.floor(x0))), min(cols - 1, int(np.floor(x1)))
        if r0 <= r1 and c0 <= c1:
            self.blockSelected.emit(r0, r1, c0, c1)

    def click_cell(self, row: int, col: int, additive: bool = False) -> None:
        """Programmatic click (tests, keyboard): selects exactly this cell."""
        if self._cell(col + 0.5, row + 0.5) is not None:
            self.cellClicked.emit(row, col, additive)
