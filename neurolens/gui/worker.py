"""The one long-lived worker: owns the model on its own QThread and runs jobs, one at a time.

A job (:mod:`neurolens.gui.jobs`) is a Qt-free generator of engine events; the worker forwards
them as a few signals (started, progress, update, finished, failed, cancelled), progress and
updates throttled to the display rate. The GUI side submits jobs through :class:`Jobs`, which
routes each job's signals to the handlers it was submitted with. Cancel is a thread-safe flag
the GUI sets directly; the engine checks it at every token or denoising step. Activations go
into the shared, thread-safe CaptureStore; views pull from it on a timer.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from neurolens.engine.events import Cancelled, Failed, Finished, Started
from neurolens.gui.jobs import Context, Job, Progressed, Update, describe_error  # noqa: F401


def lower_thread_priority(nice: int = 10) -> None:
    """Give the calling thread (and the threads it starts later, such as torch's OpenMP team) a
    lower scheduling priority than the GUI thread, so that on a machine with few cores the
    event loop gets a core as soon as it has work. Linux only (per-thread nice); elsewhere a
    no-op."""
    import os
    import threading
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), nice))
    except OSError:
        pass


#: allocations from this size up are mapped on their own and go back to the system when freed
MMAP_THRESHOLD = 128 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's threshold for giving large blocks their own mapping (``M_MMAP_THRESHOLD``;
    by default it grows up to 32 MB as large blocks are freed). The model's forwards on the
    worker thread allocate and free many blocks of a few hundred kB; with the grown threshold
    they came from the heap and their freed space stayed resident, scattered between the rows
    the run kept: 0.2-0.3 GB of the 1B bench's peak. Linux with glibc only (elsewhere: False,
    nothing changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, MMAP_THRESHOLD))     # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def spill_folder() -> str:
    """Where the window's capture stores put the rows they keep out of memory (made at the
    first spill): the user's cache, as ``/tmp`` is often a RAM disk, which would hold them in
    memory after all."""
    from neurolens.engine.offload import cache_dir
    return str(cache_dir() / "rows")


class Worker(QObject):
    """Runs jobs on its thread and forwards their events (see the module docstring)."""

    started = Signal(int, int)          # job id, total units
    progress = Signal(int, int, int)    # job id, done, total
    update = Signal(int, object)        # job id, partial result (texts so far, images)
    finished = Signal(int, object)      # job id, result
    failed = Signal(int, str)           # job id, message for people
    cancelled = Signal(int)             # job id

    def __init__(self):
        super().__init__()
        self.ctx = Context()
        self.emit_interval = 0.03       # seconds between progress / update notices
        return_freed_memory()           # before the model's first forward

    @property
    def lm(self):
        """The loaded model (read it on the worker thread, or in tests once it is idle)."""
        return self.ctx.model

    @property
    def cancel_token(self):
        return self.ctx.cancel

    @Slot(int, object)
    def submit(self, jid: int, job: Job) -> None:
        self.ctx.cancel.reset()
        last = 0.0
        pending: dict[type, object] = {}

        def flush():
            ev = pending.pop(Progressed, None)
            if ev is not None:
                self.progress.emit(jid, ev.done, ev.total)
            ev = pending.pop(Update, None)
            if ev is not None:
                self.update.emit(jid, ev.payload)
        try:
            for ev in job(self.ctx):
                if isinstance(ev, Started):
                    self.started.emit(jid, ev.total)
                elif isinstance(ev, (Progressed, Update)):
                    pending[type(ev)] = ev
                    now = time.perf_counter()
                    if now - last >= self.emit_interval:
                        last = now
                        flush()
                elif isinstance(ev, (Finished, Cancelled, Failed)):
                    flush()
                    if isinstance(ev, Finished):
                        self.finished.emit(jid, ev.result)
                    elif isinstance(ev, Cancelled):
                        self.cancelled.emit(jid)
                    else:
                        self.failed.emit(jid, describe_error(ev.error))
                    return
            self.failed.emit(jid, "the job ended without a result")
        except Exception as e:  # noqa: BLE001 - reported to the user, the app keeps running
            traceback.print_exc()
            self.failed.emit(jid, describe_error(e))


class Jobs(QObject):
    """The GUI side of the worker: submits jobs and calls each one's handlers (on the GUI
    thread) with what the worker sends: ``started(total)``, ``progress(done, total)``,
    ``update(payload)``, ``done(result)``, ``failed(message)``, ``cancelled()``."""

    _request = Signal(int, object)
    HANDLERS = ("started", "progress", "update", "done", "failed", "cancelled")

    def __init__(self, worker: Worker, parent=None):
        super().__init__(parent)
        self.worker = worker
        self._ids = itertools.count(1)
        self._handlers: dict[int, dict] = {}
        self._request.connect(worker.submit)
        # bound slots of this object (it lives on the GUI thread): queued across threads
        worker.started.connect(self._started)
        worker.progress.connect(self._progress)
        worker.update.connect(self._update)
        worker.finished.connect(self._finished)
        worker.failed.connect(self._failed)
        worker.cancelled.connect(self._cancelled)

    @Slot(int, int)
    def _started(self, jid: int, total: int) -> None:
        self._call(jid, "started", total)

    @Slot(int, int, int)
    def _progress(self, jid: int, done: int, total: int) -> None:
        self._call(jid, "progress", done, total)

    @Slot(int, object)
    def _update(self, jid: int, payload) -> None:
        self._call(jid, "update", payload)

    @Slot(int, object)
    def _finished(self, jid: int, result) -> None:
        self._call(jid, "done", result, end=True)

    @Slot(int, str)
    def _failed(self, jid: int, msg: str) -> None:
        self._call(jid, "failed", msg, end=True)

    @Slot(int)
    def _cancelled(self, jid: int) -> None:
        self._call(jid, "cancelled", end=True)

    def submit(self, job: Job, **handlers) -> int:
        unknown = set(handlers) - set(self.HANDLERS)
        if unknown:
            raise TypeError(f"unknown job handlers: {sorted(unknown)}")
        jid = next(self._ids)
        self._handlers[jid] = handlers
        self._request.emit(jid, job)
        return jid

    def _call(self, jid: int, what: str, *args, end: bool = False) -> None:
        h = self._handlers.pop(jid, None) if end else self._handlers.get(jid)
        fn = (h or {}).get(what)
        if fn is not None:
            fn(*args)


class _Sig(QObject):
    done = Signal(int, str, object)   # request id, method, points


class _ProjectionTask(QRunnable):
    def __init__(self, projector: Projector, rid: int, method: str, x, gen: int):
        super().__init__()
        self.projector, self.rid, self.method, self.x, self.gen = projector, rid, method, x, gen

    def run(self) -> None:
        from neurolens.engine import keyspace
        try:
            if self.method == "pca":
                pts = keyspace.pca_2d(self.x)
            elif keyspace.child_available():
                proc = self.projector._start_umap(self.x, self.gen)
                if proc is None:          # a newer request came first
                    return
                pts = proc.result()
            else:                         # a frozen bundle: in this process, as before
                pts = keyspace.umap_2d(self.x)
        except keyspace.UmapProcess.Cancelled:
            return
        except Exception as e:  # noqa: BLE001
            pts = e
        if self.rid < 0:                  # the warm-up: nobody waits for it
            return
        try:
            self.projector._sig.done.emit(self.rid, self.method, pts)
        except RuntimeError:   # the window closed while UMAP was running: nobody to tell
            pass


class Projector(QObject):
    """PCA / UMAP off the GUI thread (a thread pool, so a slow UMAP never blocks a run). UMAP
    runs in a child process (:class:`neurolens.engine.keyspace.UmapProcess`: the window's
    process never imports umap and numba); a newer UMAP request kills the older child."""

    ready = Signal(int, str, object)

    def __init__(self):
        super().__init__()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(2)
        self._sig = _Sig()
        self._sig.done.connect(self.ready)
        self._lock = threading.Lock()
        self._gen = 0              # the newest UMAP request
        self._proc = None          # its child process, once started

    def submit(self, rid: int, method: str, x) -> None:
        gen = 0
        if method == "umap":
            with self._lock:
                self._gen += 1
                gen = self._gen
                self._kill()
        self.pool.start(_ProjectionTask(self, rid, method, x, gen))

    def _start_umap(self, x, gen: int):
        """(pool thread) The child for request ``gen``; None when a newer one came."""
        from neurolens.engine.keyspace import UmapProcess
        with self._lock:
            if gen != self._gen:
                return None
            self._proc = UmapProcess(x)
            return self._proc

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.cancel()
            self._proc = None

    def cancel(self) -> None:
        """Stop a running UMAP (its child process ends); a task waiting to start will not."""
        with self._lock:
            self._gen += 1
            self._kill()

    @property
    def umap_running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.proc.poll() is None

    def warm_up(self) -> None:
        """Start UMAP once on a few random points in a child process (numba's compiled code is
        cached on disk, so the first real request starts sooner); a real request replaces it."""
        import numpy as np
        self.submit(-1, "umap", np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
