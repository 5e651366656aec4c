"""Before/after view: texts side by side with the first divergence and changed tokens marked,
per-token probability of the chosen token in both runs, skill metrics per prompt set."""

from __future__ import annotations

from html import escape

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QLabel, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QTextBrowser, QVBoxLayout, QHBoxLayout, QWidget)


def _tok_html(tokens: list[str], start_diff: int | None, other: list[str]) -> str:
    out = []
    for k, t in enumerate(tokens):
        txt = escape(t).replace("\n", "⏎")
        changed = start_diff is not None and k >= start_diff and (k >= len(other) or
                                                                  other[k] != t)
        if start_diff is not None and k == start_diff:
            out.append("<span style='color:#c00;font-weight:bold'>▶</span>")
        out.append(f"<span style='background:#ffc9c9'>{txt}</span>" if changed else txt)
    return "".join(out)


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
        items = r["items"]
        n_changed = sum(it["changed"] for it in items)
        self.summary.setText(f"<b>{n_changed} of {len(items)} outputs changed</b> by "
                             f"{r['n_edits']} enabled edit(s) · seed {r['seed']}")
        rows = ["<table width='100%' cellspacing='0' cellpadding='4' border='1' "
                "style='border-collapse:collapse'><tr><th>prompt</th><th>baseline</th>"
                "<th>edited</th></tr>"]
        for it in items:
            d = it["first_divergence"]
            mark = "" if d is None else f"<br><small>diverges at token {d}</small>"
            rows.append(
                f"<tr><td><small>[{escape(it['set'])}]</small> {escape(it['prompt'])}{mark}"
                f"</td><td style='font-family:monospace'>"
                f"{_tok_html(it['base_tokens'], d, it['edit_tokens'])}</td>"
                f"<td style='font-family:monospace'>"
                f"{_tok_html(it['edit_tokens'], d, it['base_tokens'])}</td></tr>")
        rows.append("</table>")
        self.texts.setHtml("".join(rows).replace("\n", "<br>"))
        self.which.setRange(0, max(0, len(items) - 1))
        self._plot()
        m = r.get("metrics", [])
        self.metrics.setRowCount(len(m))
        for k, row in enumerate(m):
            rel = row["relative"]
            vals = [row["set"], f"{row['before']:.3f}", f"{row['after']:.3f}",
                    "n/a" if rel is None else f"{rel:.3f}"]
            for c, v in enumerate(vals):
                self.metrics.setItem(k, c, QTableWidgetItem(v))

    def _plot(self) -> None:
        self.plot.clear()
        if not self.result or not self.result["items"]:
            return
        it = self.result["items"][min(self.which.value(), len(self.result["items"]) - 1)]
        for key, col, name in (("base_logprobs", (60, 60, 200), "baseline"),
                               ("edit_logprobs", (220, 60, 60), "edited")):
            p = np.exp(np.asarray(it[key], dtype=float))
            if p.size:
                self.plot.plot(np.arange(len(p)), p, pen=pg.mkPen(col, width=2), symbol="o",
                               symbolSize=6, symbolBrush=col, name=name)
