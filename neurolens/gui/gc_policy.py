"""Garbage collection only on the GUI thread, while a window is open.

Python runs its cyclic garbage collector on whichever thread happens to allocate. When the
torch worker thread triggers it and the cycle holds Qt objects (pyqtgraph items, closed
windows), their C++ destructors run on the worker thread; Qt forbids that, and with PySide6 it
can deadlock (seen here: the worker in ``~QObject`` waiting for the GIL while the GUI thread
waited for the worker). So the GUI turns automatic collection off and collects on a GUI-thread
timer instead, generation by generation with the interpreter's own thresholds.

Long-lived objects (torch, transformers, the loaded model's modules) are moved out of the
collector's reach with :func:`gc.freeze` once a model is loaded, so a full collection walks only
what the session created since and stays short on the event loop.

The policy is process-wide but not permanent: each window :func:`acquire`\\ s it and
:func:`release`\\ s it when it closes. Once every window has closed *and* its worker thread has
finished (a collection on a worker thread is what deadlocked), the interpreter's own policy
comes back exactly as it was (enabled, thresholds, nothing frozen), and the next window installs
the policy afresh. Code that embeds the window (tests, notebooks) thus keeps normal collection.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer

_policy: GuiThreadCollector | None = None


class GuiThreadCollector(QObject):
    INTERVAL_MS = 250

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        self.was_enabled = gc.isenabled()
        self.collections = [0, 0, 0]
        # holder id -> None while it is open, else a callable that is true once it is idle
        self.holders: dict[int, Callable[[], bool] | None] = {}
        gc.disable()
        self.timer = QTimer(self)
        self.timer.setInterval(self.INTERVAL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()

    def check(self) -> None:
        if self.holders and self._all_idle():
            _uninstall(self)
            return
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.threshold
        if c0 <= t0:
            return
        gen = 2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0
        gc.collect(gen)
        self.collections[gen] += 1

    def _all_idle(self) -> bool:
        for idle in self.holders.values():
            if idle is None:
                return False
            try:
                if not idle():
                    return False
            except RuntimeError:  # its C++ thread object is gone, so the thread has ended
                pass
        return True

    def restore(self) -> None:
        """Give the interpreter its own policy back (call on the GUI thread, workers ended)."""
        self.timer.stop()
        gc.unfreeze()
        gc.set_threshold(*self.threshold)
        if self.was_enabled:
            gc.enable()

    @staticmethod
    def freeze() -> None:
        """Everything alive now is permanent: later full collections skip it. Unfrozen first,
        so what a previous model left in cycles is collected now rather than kept forever."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()


def install(app: QObject) -> GuiThreadCollector:
    """The process-wide policy, created if none is in force (call from the GUI thread)."""
    global _policy
    if _policy is None:
        _policy = GuiThreadCollector(app)
    return _policy


def acquire(app: QObject, holder: object) -> GuiThreadCollector:
    """``holder`` (a window) needs the policy until it calls :func:`release`."""
    pol = install(app)
    pol.holders[id(holder)] = None
    return pol


def release(holder: object, idle: Callable[[], bool] = lambda: True) -> None:
    """``holder`` is done with the policy once ``idle()`` is true (its worker thread has
    finished). When no holder is left the interpreter's policy is restored: now if every
    holder is idle already, else on the GUI-thread timer once they are. A holder that was
    released already, or that holds no policy, is ignored (a window can close twice)."""
    pol = _policy
    if pol is None or id(holder) not in pol.holders or pol.holders[id(holder)] is not None:
        return
    pol.holders[id(holder)] = idle
    if pol._all_idle():
        _uninstall(pol)


def _uninstall(pol: GuiThreadCollector) -> None:
    global _policy
    pol.restore()
    pol.holders.clear()
    if _policy is pol:
        _policy = None
    pol.deleteLater()
