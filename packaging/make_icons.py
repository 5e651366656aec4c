"""Render resources/icons/neurolens.svg to PNG sizes (run after editing the SVG)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def main() -> int:
    icons = Path(__file__).resolve().parent.parent / "resources" / "icons"
    app = QGuiApplication(sys.argv[:1])  # noqa: F841 - needed by QPainter
    r = QSvgRenderer(str(icons / "neurolens.svg"))
    if not r.isValid():
        print("invalid SVG", file=sys.stderr)
        return 1
    for s in SIZES:
        img = QImage(s, s, QImage.Format.Format_ARGB32)
        img.fill(Qt.GlobalColor.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r.render(p)
        p.end()
        img.save(str(icons / f"neurolens-{s}.png"))
    print(f"wrote {len(SIZES)} PNGs to {icons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
