"""The window streaming a run, timed: shared by the GUI bench cases (cases import no other
case). Runs in the cases' fresh processes only (it creates the QApplication)."""

from __future__ import annotations

import os
import time

PROBE_MS = 5   # the probe timer's interval: a gap longer than this is a stall


def stream(n_prompts: int, n_tokens: int, model: str | None, after=None) -> tuple[dict, object]:
    """Open ``model``, run ``n_prompts`` arithmetic prompts for ``n_tokens`` new tokens each
    while a 5 ms probe timer measures the event loop; ``after(app, window)`` runs inside the
    event loop once the run has finished. ``(stats, after's result)``; the window is closed."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from neurolens.gui.process import configure
    configure()          # as `neurolens gui` does, before torch loads
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from neurolens.gui.main_window import MainWindow
    from neurolens.spec.run import GenerationParams
    w = MainWindow()
    w.show()
    gaps: list[float] = []
    last: list[float | None] = [None]

    def tick():
        now = time.perf_counter()
        if not w.running:          # only gaps that lie wholly inside the stream count
            last[0] = None
            return
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(tick)
    probe.start()
    state: dict = {"started": False, "t0": None, "t1": None, "after": None}

    def poll():
        if w.model_info and not state["started"]:
            state["started"] = True
            w.add_prompts([f"Compute: {10 + i}+{20 + i}=" for i in range(n_prompts)], "bench")
            w.set_run_list(True)
            w.set_generation_params(GenerationParams(max_new_tokens=n_tokens, ignore_eos=True,
                                                     batch_size=16))
            w.refresh_times.clear()
            state["t0"] = time.perf_counter()
            w.run()
        if (state["started"] and not w.running and state["t1"] is None
                and w.last_outputs is not None):
            state["t1"] = time.perf_counter()
            poller.stop()
            probe.stop()
            if after is not None:     # inside the event loop: the worker stops when it ends
                state["after"] = after(app, w)
            app.quit()
    poller = QTimer()
    poller.timeout.connect(poll)
    poller.start(20)
    w.open_model(model or None)
    app.exec()
    ref = [x for x in w.refresh_times if state["t0"] <= x <= state["t1"]]
    dur = state["t1"] - state["t0"]
    stats = {"max_stall_ms": (max(gaps) - PROBE_MS / 1e3) * 1e3 if gaps else None,
             "refresh_hz": len(ref) / dur if dur else 0.0, "seconds": dur,
             "p99_gap_ms": float(sorted(gaps)[int(len(gaps) * 0.99)] * 1e3) if gaps else None}
    w.close()
    return stats, state["after"]
