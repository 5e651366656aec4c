"""Application icon (SVG source in resources/icons)."""

from __future__ import annotations


def app_icon():
    from PySide6.QtGui import QIcon

    from neurolens.resources import resources_dir
    d = resources_dir() / "icons"
    icon = QIcon()
    for p in sorted(d.glob("neurolens-*.png")):
        icon.addFile(str(p))
    svg = d / "neurolens.svg"
    if icon.isNull() and svg.is_file():
        icon.addFile(str(svg))
    return None if icon.isNull() else icon
