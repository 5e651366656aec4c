"""Image grid for diffusion pipelines: the images forming step by step, and before/after/difference
rows after a comparison. Draws from numpy arrays handed to it; computes nothing heavy."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget


def grid_array(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """rows: each [n, H, W, C] in 0..1 -> one uint8 grayscale/RGB canvas [h, w(, 3)]."""
    h, w = rows[0].shape[1:3]
    c = 3 if any(r.shape[-1] == 3 for r in rows) else 1
    n = max(len(r) for r in rows)
    out = np.full(((h + pad) * len(rows) + pad, (w + pad) * n + pad, c), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            im = im if im.shape[-1] == c else np.repeat(im[..., :1], c, axis=-1)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = (np.clip(im, 0, 1) * 255).astype(np.uint8)
    return out


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
        g = grid_array(rows)
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
