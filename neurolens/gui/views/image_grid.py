"""Image grid for diffusion pipelines: the images forming step by step, and before/after/difference
rows after a comparison. Draws from numpy arrays handed to it; computes nothing heavy."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

from neurolens.engine.diffusion import image_grid


class ImageGrid(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.caption = QLabel("Images appear here while a diffusion pipeline denoises.")
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        area = QScrollArea()
        area.setWidget(self.label)
        area.setWidgetResizable(True)
        lay.addWidget(area, 1)
        self.rows: list[np.ndarray] = []
        self.canvas: np.ndarray | None = None

    def show_rows(self, rows: list[np.ndarray], caption: str, cell: int = 80,
                  wrap: int = 6) -> None:
        """Each row [n, H, W, C]; a single long row wraps after ``wrap`` images."""
        rows = [r for r in rows if r is not None and len(r)]
        if not rows:
            return
        if len(rows) == 1 and len(rows[0]) > wrap:
            r = rows[0]
            rows = [r[i:i + wrap] for i in range(0, len(r), wrap)]
        self.rows = rows
        self.caption.setText(caption)
        g = image_grid(rows)
        self.canvas = g
        h, w = g.shape[:2]
        if g.shape[-1] == 1:
            img = QImage(np.ascontiguousarray(g[..., 0]).data, w, h, w,
                         QImage.Format.Format_Grayscale8)
        else:
            img = QImage(np.ascontiguousarray(g).data, w, h, 3 * w, QImage.Format.Format_RGB888)
        side = rows[0].shape[1]
        n_cols = max(len(r) for r in rows)
        avail = max(200, self.width() - 24)          # fit the row into the visible width
        cell = max(24, min(cell, avail // max(1, n_cols)))
        scale = max(1, cell // max(1, side))
        pix = QPixmap.fromImage(img.copy()).scaled(
            w * scale, h * scale, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation)
        self.label.setPixmap(pix)
