"""Controllers: the window's state changes. Each owns one job (runs, method fits, sessions and
autosave, export and edit files), submits work to the worker through
:class:`neurolens.gui.worker.Jobs` and shows the results through the window's views and the
presenters. They hold the window (``self.w``) for its widgets and never touch the model."""

from __future__ import annotations

from PySide6.QtCore import QObject


class Controller(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
