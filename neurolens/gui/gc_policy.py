"""Garbage collection only on the GUI thread.

Python runs its cyclic garbage collector on whichever thread happens to allocate. When the
torch worker thread triggers it and the cycle holds Qt objects (pyqtgraph items, closed
windows), their C++ destructors run on the worker thread; Qt forbids that, and with PySide6 it
can deadlock (seen here: the worker in ``~QObject`` waiting for the GIL while the GUI thread
waited for the worker). So the GUI turns automatic collection off and collects on a GUI-thread
timer instead, generation by generation with the interpreter's own thresholds.

Long-lived objects (torch, transformers, the loaded model's modules) are moved out of the
collector's reach with :func:`gc.freeze` once a model is loaded, so a full collection walks only
what the session created since and stays short on the event loop.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

_policy: "GuiThreadCollector | None" = None


class GuiThreadCollector(QObject):
    INTERVAL_MS = 250

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        self.collections = [0, 0, 0]
        gc.disable()
        self.timer = QTimer(self)
        self.timer.setInterval(self.INTERVAL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def check(self) -> None:
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.threshold
        if c0 <= t0:
            return
        gen = 2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0
        gc.collect(gen)
        self.collections[gen] += 1

    @staticmethod
    def freeze() -> None:
        """Everything alive now is permanent: later full collections skip it. Unfrozen first,
        so what a previous model left in cycles is collected now rather than kept forever."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()


def install(app: QObject) -> GuiThreadCollector:
    """Once per process, owned by the QApplication (call from the GUI thread)."""
    global _policy
    if _policy is None:
        _policy = GuiThreadCollector(app)
    return _policy
