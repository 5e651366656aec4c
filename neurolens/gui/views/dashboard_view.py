"""A neuron's corpus dashboard in the inspector: its firing density, its activation histogram over
the indexed corpus, and its top activating examples (the firing token boxed, the context shaded
by the neuron's activation). Without an index for the loaded model: one line on how to build
one. Widgets only; the data come from :mod:`neurolens.gui.presenters.attribute`."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from neurolens.gui.presenters.attribute import (dashboard_header, dashboard_html,
                                                histogram_bars, missing_index_text)


class DashboardView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.header = QLabel("")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.header.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        lay.addWidget(self.header)
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "activation over the corpus")
        self.hist.setLabel("left", "log₁₀(1+n)")
        self.hist.setMouseEnabled(x=False, y=False)
        self.hist.hideButtons()
        self.hist.setFixedHeight(90)
        lay.addWidget(self.hist)
        self.examples = QTextBrowser()
        self.examples.setOpenLinks(False)
        self.examples.setMinimumHeight(80)
        lay.addWidget(self.examples, 1)
        self.dashboard = None
        self.state = "empty"            # empty | missing | shown | error
        self._show_parts(False)

    def _show_parts(self, on: bool) -> None:
        self.hist.setVisible(on)
        self.examples.setVisible(on)

    def show_missing(self, model_name: str) -> None:
        self.state, self.dashboard = "missing", None
        self.header.setText(missing_index_text(model_name))
        self._show_parts(False)

    def show_message(self, text: str) -> None:
        self.state, self.dashboard = "error", None
        self.header.setText(text)
        self._show_parts(False)

    def clear(self) -> None:
        self.state, self.dashboard = "empty", None
        self.header.setText("")
        self._show_parts(False)

    def show_dashboard(self, d) -> None:
        self.state, self.dashboard = "shown", d
        self.header.setText(dashboard_header(d))
        edges, heights = histogram_bars(d)
        self.hist.clear()
        self.hist.plot(edges, heights, stepMode="center", fillLevel=0,
                       brush=pg.mkBrush(200, 60, 60, 110), pen=pg.mkPen("#b03030", width=1.2))
        self.examples.setHtml(dashboard_html(d))
        self._show_parts(True)

    def example_texts(self) -> list[str]:
        """The examples as plain text, one per line (tests)."""
        return [line for line in self.examples.toPlainText().splitlines() if line.strip()]
