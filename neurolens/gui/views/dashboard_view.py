"""A neuron's corpus dashboard in the inspector: its firing density, its activation histogram over
the indexed corpus, and its top activating examples (the firing token boxed, the context shaded
by the neuron's activation). Without an index for the loaded model: one line on how to build
one. Below them the build bar: "Build index" (its menu chooses the corpus), a progress bar, Cancel
and a line with the tokens done and the time left. Widgets only; the data come from
:mod:`neurolens.gui.presenters.attribute` and :mod:`neurolens.gui.presenters.index`."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QMenu, QProgressBar, QPushButton,
                               QTextBrowser, QToolButton, QVBoxLayout, QWidget)

from neurolens.gui.presenters.attribute import (dashboard_header, dashboard_html,
                                                histogram_bars, missing_index_text)


class DashboardView(QWidget):
    buildRequested = Signal()           # the button: build (asks the corpus) or resume
    fileRequested = Signal()            # the menu: a text or JSONL file
    folderRequested = Signal()          # the menu: a folder of .txt files
    defaultRequested = Signal()         # the menu: the corpus offered first
    cancelRequested = Signal()

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
        self.spacer = QWidget()         # keeps the build bar at the bottom without examples
        lay.addWidget(self.spacer, 1)
        self._build_bar(lay)
        self.dashboard = None
        self.state = "empty"            # empty | missing | shown | error
        self._show_parts(False)

    def _build_bar(self, lay) -> None:
        row = QHBoxLayout()
        row.setSpacing(4)
        self.build_btn = QToolButton()
        self.build_btn.setText("Build index…")
        self.build_btn.setToolTip("stream a corpus through the loaded model and keep every "
                                  "neuron's top examples (in the background; cancel keeps the "
                                  "finished part, and Resume continues it)")
        self.build_btn.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.build_btn.clicked.connect(self.buildRequested)
        menu = QMenu(self.build_btn)
        self.default_action = QAction("Index the demo corpus", self)
        self.default_action.triggered.connect(self.defaultRequested)
        menu.addAction(self.default_action)
        a = QAction("Index a text or JSONL file…", self)
        a.triggered.connect(self.fileRequested)
        menu.addAction(a)
        a = QAction("Index a folder of .txt files…", self)
        a.triggered.connect(self.folderRequested)
        menu.addAction(a)
        self.build_btn.setMenu(menu)
        row.addWidget(self.build_btn, 0, Qt.AlignmentFlag.AlignLeft)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(14)
        row.addWidget(self.progress, 1)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancelRequested)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.build_status = QLabel("")
        self.build_status.setWordWrap(True)
        self.build_status.setStyleSheet("color: #555")
        lay.addWidget(self.build_status)
        self.set_building(False)
        self.set_build_state("Build index…", "", None)

    def set_building(self, on: bool) -> None:
        """While a build runs: Cancel and the progress bar; else the button."""
        self.build_btn.setEnabled(not on)
        self.cancel_btn.setVisible(on)
        self.cancel_btn.setEnabled(on)
        self.progress.setVisible(on)
        if on:
            self.progress.setRange(0, 0)        # busy until the tokens are counted

    def set_build_state(self, button: str, line: str, default: str | None) -> None:
        """The button's text, the line under it, the menu's first entry (None: hidden)."""
        self.build_btn.setText(button)
        self.build_status.setText(line)
        self.default_action.setVisible(default is not None)
        if default is not None:
            self.default_action.setText(default)

    def show_progress(self, done: int, total: int, line: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(min(done, total))
        self.build_status.setText(line)

    def _show_parts(self, on: bool) -> None:
        self.hist.setVisible(on)
        self.examples.setVisible(on)
        self.spacer.setVisible(not on)

    def show_missing(self, model_name: str) -> None:
        self.state, self.dashboard = "missing", None
        self.header.setText(f"{missing_index_text(model_name)}, or use <b>Build index</b> "
                            "below.")
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
