"""The Attention tab: the layer x head grid of a per-head summary (clickable), the opened
head's query x key pattern with the prompt's tokens on both axes, its output norm per token
beside the rows, and buttons that turn the selected heads into prune / scale edits. No logic:
the controller (controllers/attention.py) fills it from the presenter's data."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainterPath, QPen
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QGraphicsPathItem, QHBoxLayout,
                               QLabel, QPushButton, QSpinBox, QSplitter, QVBoxLayout, QWidget)

from neurolens.gui.presenters.attention import (ATTRIBUTION, HEAD_METHODS, LABELS,
                                                pattern_cell_text)

SEQUENTIAL = pg.colormap.get("viridis")
DIVERGING = pg.colormap.get("CET-D1")
#: white to dark blue: weights near 0 fade into the background
PATTERN = pg.ColorMap([0.0, 0.5, 1.0], [(255, 255, 255), (66, 146, 198), (8, 48, 107)])


class _ClickBox(pg.ViewBox):
    clicked = Signal(float, float, bool)     # x, y, additive (shift)

    def mouseClickEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            self.clicked.emit(p.x(), p.y(),
                              bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier))
            ev.accept()
        else:
            super().mouseClickEvent(ev)


class TokenAxis(pg.AxisItem):
    """A bottom axis with one label per token, written vertically so that every token of a
    prompt fits (where the axis is too narrow, every k-th)."""

    MAX_PX = 90

    def __init__(self):
        super().__init__("bottom")
        self.labels: list[str] = []
        self.setStyle(showValues=False)
        self.fixed_height = 30
        self.setHeight(30)

    def set_labels(self, labels: list[str]) -> None:
        self.labels = list(labels)
        fm = QFontMetricsF(self.style["tickFont"] or self.font())
        w = max((fm.horizontalAdvance(t) for t in labels), default=10.0)
        self.fixed_height = int(min(w, self.MAX_PX)) + 8 + (18 if self.labelText else 0)
        self.setHeight(self.fixed_height)
        self.picture = None
        self.update()

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):
        super().drawPicture(p, axisSpec, tickSpecs, [])
        if not self.labels:
            return
        lo, hi = self.range
        width = self.width()
        if hi <= lo or width <= 0:
            return
        fm = QFontMetricsF(p.font())
        line = fm.height()
        px_per = width / (hi - lo)
        step = max(1, int(np.ceil(line / max(px_per, 1e-6))))
        p.setPen(self.textPen())
        for i in range(0, len(self.labels), step):
            x = (i + 0.5 - lo) * px_per
            if not -1 <= x <= width + 1:
                continue
            p.save()
            p.translate(x, 3)
            p.rotate(-90)
            p.drawText(QRectF(-self.MAX_PX, -line / 2, self.MAX_PX, line),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                       fm.elidedText(self.labels[i], Qt.TextElideMode.ElideRight,
                                     self.MAX_PX))
            p.restore()


def _row_ticks(labels: list[str], max_ticks: int = 40):
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    return [[(i + 0.5, labels[i]) for i in range(0, len(labels), step)]]


class HeadGrid(pg.GraphicsLayoutWidget):
    """layers x heads image with each cell's value written in it; emits clicked cells."""

    cellClicked = Signal(int, int, bool)      # layer, head, additive

    def __init__(self, parent=None):
        super().__init__(parent=parent)
        self.setBackground("w")
        self.vb = _ClickBox()
        self.vb.setMouseEnabled(x=False, y=False)
        self.vb.invertY(True)
        self.plot = self.addPlot(viewBox=self.vb, title="layer × head")
        self.plot.setLabel("bottom", "head")
        self.plot.setLabel("left", "layer")
        self.plot.hideButtons()
        self.img = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.img)
        self.bar = pg.ColorBarItem(values=(0, 1), colorMap=SEQUENTIAL, interactive=False,
                                   width=12)
        self.bar.setImageItem(self.img, insert_in=self.plot)
        pen = QPen(QColor("#e4007c"))
        pen.setCosmetic(True)
        pen.setWidthF(3)
        self.marks = QGraphicsPathItem()
        self.marks.setPen(pen)
        self.plot.addItem(self.marks, ignoreBounds=True)
        self.texts: list[pg.TextItem] = []
        self.data = np.zeros((0, 0), np.float32)
        self.hint = pg.TextItem("", color="#666", anchor=(0.5, 0.5))
        self.vb.addItem(self.hint, ignoreBounds=True)
        self.vb.clicked.connect(self._on_click)

    def set_message(self, text: str) -> None:
        self.hint.setText(text)
        self.hint.setPos(self.data.shape[1] / 2 if self.data.size else 0.5,
                         self.data.shape[0] / 2 if self.data.size else 0.5)
        self.hint.setVisible(bool(text))
        self.img.setVisible(not text)
        for t in self.texts:
            t.setVisible(not text)

    def set_data(self, m: np.ndarray, levels, diverging: bool, title: str, texts) -> None:
        self.data = np.asarray(m, np.float32)
        cmap = DIVERGING if diverging else SEQUENTIAL
        self.bar.setColorMap(cmap)
        self.img.setLookupTable(cmap.getLookupTable(nPts=256))
        self.img.setImage(np.nan_to_num(self.data, nan=levels[0]), autoLevels=False,
                          levels=levels)
        self.bar.setLevels(levels)
        self.img.setRect(QRectF(0, 0, m.shape[1], m.shape[0]))
        self.plot.setTitle(title)
        self.vb.setRange(xRange=(0, m.shape[1]), yRange=(0, m.shape[0]), padding=0)
        self.plot.getAxis("left").setTicks([[(r + 0.5, f"L{r}") for r in range(m.shape[0])]])
        self.plot.getAxis("bottom").setTicks([[(h + 0.5, f"H{h}")
                                               for h in range(m.shape[1])]])
        for t in self.texts:
            self.vb.removeItem(t)
        self.texts = []
        if texts is not None:
            lo, hi = levels
            lut = cmap.getLookupTable(nPts=256)
            for r, row in enumerate(texts):
                for c, s in enumerate(row):
                    v = self.data[r, c]
                    k = int(np.clip((0 if not np.isfinite(v) else (v - lo) / (hi - lo)) * 255,
                                    0, 255))
                    rgb = lut[k][:3]
                    dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140
                    t = pg.TextItem(s, color="w" if dark else "k", anchor=(0.5, 0.5))
                    t.setPos(c + 0.5, r + 0.5)
                    self.vb.addItem(t, ignoreBounds=True)
                    self.texts.append(t)
        self.set_message("")

    def mark(self, cells) -> None:
        path = QPainterPath()
        for r, c in cells:
            path.addRect(QRectF(c + 0.04, r + 0.04, 0.92, 0.92))
        self.marks.setPath(path)

    def _on_click(self, x, y, additive):
        r, c = int(np.floor(y)), int(np.floor(x))
        if self.data.size and 0 <= r < self.data.shape[0] and 0 <= c < self.data.shape[1]:
            self.cellClicked.emit(r, c, additive)

    def click_cell(self, layer: int, head: int, additive: bool = False) -> None:
        """Programmatic click (tests, the screenshot)."""
        self._on_click(head + 0.5, layer + 0.5, additive)

    def has_data(self) -> bool:
        return self.data.size > 0 and self.img.isVisible()


class PatternView(pg.GraphicsLayoutWidget):
    """A head's query x key pattern (tokens on both axes) and its output norm per token, as
    bars beside the query rows."""

    def __init__(self, parent=None):
        super().__init__(parent=parent)
        self.setBackground("w")
        self.key_axis = TokenAxis()
        self.plot = self.addPlot(axisItems={"bottom": self.key_axis}, title="pattern")
        self.plot.setLabel("left", "query")
        self.plot.hideButtons()
        self.plot.invertY(True)
        self.plot.setMouseEnabled(x=False, y=False)
        self.img = pg.ImageItem(axisOrder="row-major")
        self.img.setLookupTable(PATTERN.getLookupTable(nPts=256))
        self.plot.addItem(self.img)
        self.bar = pg.ColorBarItem(values=(0, 1), colorMap=PATTERN, interactive=False, width=12)
        self.bar.setImageItem(self.img, insert_in=self.plot)
        self.norm_axis = TokenAxis()
        self.norm_plot = self.addPlot(title="output norm")
        self.norm_plot.hideButtons()
        self.norm_plot.setMouseEnabled(x=False, y=False)
        self.norm_plot.invertY(True)
        self.norm_plot.setYLink(self.plot)
        self.norm_plot.getAxis("left").setStyle(showValues=False)
        self.norm_plot.setLabel("bottom", "‖z‖ per token")
        # (empty bars give a NaN bounding box, which blanks the whole scene: hidden instead)
        self.norms = pg.BarGraphItem(x0=[0], y=[0.5], height=0.8, width=[0], brush="#4c72b0")
        self.norms.setVisible(False)
        self.norm_plot.addItem(self.norms)
        self.norm_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.ci.layout.setColumnStretchFactor(0, 5)
        self.ci.layout.setColumnStretchFactor(1, 1)
        self.data = np.zeros((0, 0), np.float32)
        self.norm_values = np.zeros(0, np.float32)
        self.labels: list[str] = []
        self.plot.vb.sigResized.connect(self._row_ticks)
        # the hover read-out: the cell under the cursor, in the plot's top-right corner
        self.readout = pg.TextItem("", color="k", fill=pg.mkBrush(255, 255, 255, 230),
                                   anchor=(1, 0))
        self.readout.setParentItem(self.plot.vb)
        self.readout.setZValue(1000)
        self.readout.hide()
        self.scene().sigMouseMoved.connect(self._on_move)
        font = QFont()
        font.setPointSizeF(max(font.pointSizeF(), 9.0))
        for ax in (self.plot.getAxis("left"), self.key_axis):
            ax.setTickFont(font)
            ax.setTextPen("#222")

    def _row_ticks(self, *_) -> None:
        """One query label per row where the rows are tall enough, else every k-th."""
        n = len(self.labels)
        if not n:
            return
        line = QFontMetricsF(self.plot.getAxis("left").style["tickFont"] or QFont()).height()
        fit = max(1, int(self.plot.vb.height() / max(line, 1.0)))
        self.plot.getAxis("left").setTicks(_row_ticks(self.labels, fit))

    def set_head(self, view) -> None:
        n = view.pattern.shape[0]
        self.data, self.labels = view.pattern, list(view.labels)
        self.norm_values = view.out_norm
        self.img.setImage(view.pattern, autoLevels=False, levels=view.levels)
        self.bar.setLevels(view.levels)
        self.img.setRect(QRectF(0, 0, view.pattern.shape[1], n))
        self.plot.setTitle(view.title)
        self.plot.setLimits(xMin=0, xMax=max(1, view.pattern.shape[1]), yMin=0, yMax=max(1, n))
        self.plot.setRange(xRange=(0, view.pattern.shape[1]), yRange=(0, n), padding=0)
        self._row_ticks()
        self.key_axis.setLabel("key")
        self.key_axis.set_labels(self.labels[: view.pattern.shape[1]])
        # the same axis height under both plots: their rows line up
        self.norm_plot.getAxis("bottom").setHeight(self.key_axis.fixed_height)
        self.norms.setOpts(x0=np.zeros(n), y=np.arange(n) + 0.5, width=view.out_norm,
                           height=0.8)
        self.img.setVisible(True)
        self.norms.setVisible(True)
        self.norm_plot.setXRange(0, float(max(view.out_norm.max(initial=0), 1e-6)) * 1.05,
                                 padding=0)

    def _on_move(self, pos) -> None:
        text = ""
        if self.data.size and self.plot.vb.sceneBoundingRect().contains(pos):
            p = self.plot.vb.mapSceneToView(pos)
            text = pattern_cell_text(self.labels, self.data, int(np.floor(p.y())),
                                     int(np.floor(p.x())))
        self.readout.setText(text)
        self.readout.setPos(self.plot.vb.width() - 2, 2)
        self.readout.setVisible(bool(text))

    def hover_text(self) -> str:
        return self.readout.textItem.toPlainText() if self.readout.isVisible() else ""

    def leaveEvent(self, ev):
        self.readout.hide()
        super().leaveEvent(ev)

    def show_empty(self) -> None:
        self.data = np.zeros((0, 0), np.float32)
        self.norm_values = np.zeros(0, np.float32)
        self.img.setVisible(False)
        self.norms.setVisible(False)
        self.plot.setTitle("pattern: click a head in the grid")
        self.key_axis.set_labels([])
        self.plot.getAxis("left").setTicks([[]])

    def has_data(self) -> bool:
        return self.data.size > 0


class AttentionView(QWidget):
    """The tab (see the module docstring)."""

    computeRequested = Signal()
    cancelRequested = Signal()
    choiceChanged = Signal()
    promptChanged = Signal(int)
    editRequested = Signal(str, float)        # "prune" | "scale", factor

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        row = QHBoxLayout()
        row.addWidget(QLabel("summary"))
        self.metric = QComboBox()
        for key, text in LABELS.items():
            self.metric.addItem(text, key)
        self.metric.setCurrentIndex(list(LABELS).index("induction"))
        row.addWidget(self.metric)
        self.stat = QComboBox()
        self.stat.addItems(["mean", "set difference A − B"])
        row.addWidget(self.stat)
        self.set_a, self.set_b = QComboBox(), QComboBox()
        for label, c in (("A", self.set_a), ("B", self.set_b)):
            c.setMinimumWidth(90)
            row.addWidget(QLabel(label))
            row.addWidget(c)
        for c in (self.metric, self.stat, self.set_a, self.set_b):
            c.currentIndexChanged.connect(lambda *_: self.choiceChanged.emit())
        row.addSpacing(12)
        self.induction_label = QLabel("induction length")
        row.addWidget(self.induction_label)
        self.induction_len = QSpinBox()
        self.induction_len.setRange(2, 512)
        self.induction_len.setValue(20)
        self.induction_len.setToolTip("random tokens repeated twice (4 sequences)")
        row.addWidget(self.induction_len)
        self.attr_method = QComboBox()
        for key, text in HEAD_METHODS.items():
            self.attr_method.addItem(text, key)
        self.attr_method.setToolTip("attribution patching (two passes, a linear estimate) or "
                                    "exact patching (one run per head); the answer, contrast "
                                    "and corruption come from the Attribute tab")
        row.addWidget(self.attr_method)
        self.compute_btn = QPushButton()
        self.compute_btn.clicked.connect(self.computeRequested)
        self.metric.currentIndexChanged.connect(self._metric_changed)
        self._metric_changed()
        row.addWidget(self.compute_btn)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancelRequested)
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.cancel_btn)
        row.addStretch(1)
        lay.addLayout(row)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.grid = HeadGrid()
        ll.addWidget(self.grid, 1)
        self.selection = QLabel("")
        self.selection.setWordWrap(True)
        ll.addWidget(self.selection)
        row = QHBoxLayout()
        self.prune_btn = QPushButton("Prune selected heads")
        self.prune_btn.clicked.connect(lambda: self.editRequested.emit("prune", 0.0))
        row.addWidget(self.prune_btn)
        self.scale_btn = QPushButton("Scale ×")
        self.scale_btn.clicked.connect(
            lambda: self.editRequested.emit("scale", self.factor.value()))
        row.addWidget(self.scale_btn)
        self.factor = QDoubleSpinBox()
        self.factor.setRange(-100.0, 100.0)
        self.factor.setDecimals(2)
        self.factor.setSingleStep(0.1)
        self.factor.setValue(0.5)
        row.addWidget(self.factor)
        ll.addLayout(row)
        split.addWidget(left)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("prompt"))
        self.prompt = QComboBox()
        self.prompt.setMinimumWidth(200)
        self.prompt.currentIndexChanged.connect(self.promptChanged)
        row.addWidget(self.prompt, 1)
        rl.addLayout(row)
        self.pattern = PatternView()
        rl.addWidget(self.pattern, 1)
        split.addWidget(right)
        split.setSizes([520, 560])
        lay.addWidget(split, 1)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        lay.addWidget(self.info)
        self.pattern.show_empty()

    def attributing(self) -> bool:
        """The grid's choice is the per-head attribution (not a head summary)."""
        return self.metric.currentData() == ATTRIBUTION

    def _metric_changed(self, *_) -> None:
        attr = self.attributing()
        self.attr_method.setVisible(attr)
        self.induction_label.setVisible(not attr)
        self.induction_len.setVisible(not attr)
        self.compute_btn.setText("Attribute heads" if attr else "Compute head summaries")
        self.compute_btn.setToolTip(
            "the Attribute tab's prompt, answer, contrast and corruption, scored per query "
            "head (hook_z), with the enabled edits" if attr else
            "over the typed prompt and the prompt list, with the enabled edits (eager "
            "attention: slower)")

    def choice(self):
        from neurolens.gui.presenters.attention import GridChoice
        return GridChoice(metric=self.metric.currentData(), diff=self.stat.currentIndex() == 1,
                          set_a=self.set_a.currentText(), set_b=self.set_b.currentText())

    def set_sets(self, names: list[str]) -> None:
        for i, c in enumerate((self.set_a, self.set_b)):
            cur = c.currentText()
            c.blockSignals(True)
            c.clear()
            c.addItems(names)
            if cur in names:
                c.setCurrentText(cur)
            elif len(names) > i:
                c.setCurrentIndex(i)
            c.blockSignals(False)

    def set_prompts(self, prompts: list[str], current: int = 0) -> None:
        self.prompt.blockSignals(True)
        self.prompt.clear()
        for p in prompts:
            one = p.replace("\n", " ⏎ ")
            self.prompt.addItem(one if len(one) <= 80 else one[:79] + "…")
        if prompts:
            self.prompt.setCurrentIndex(min(current, len(prompts) - 1))
        self.prompt.blockSignals(False)

    def set_busy(self, busy: bool) -> None:
        self.compute_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
