"""The GUI while it streams: the longest event-loop stall and the heatmap refresh rate.

``case`` (in the bench process) runs ``python -m neurolens.bench.cases.gui N_PROMPTS N_TOKENS
[MODEL]`` with its own settings folder; ``main`` (in that fresh process) drives the window
through its public API only (``open_model``, ``add_prompts``, ``set_run_list``,
``set_generation_params``, ``run``; ``model_info``, ``running``, ``last_outputs``,
``refresh_times``) and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from neurolens.bench.measure import Case, check


def case(n_prompts: int, n_tokens: int, model: str | None = None) -> list[Case]:
    # a settings folder of its own: the scripted window never touches the user's recent models
    # or autosave (see neurolens.gui.settings)
    with tempfile.TemporaryDirectory(prefix="neurolens-bench-settings-") as settings:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NEUROLENS_SETTINGS_DIR": settings}
        r = subprocess.run([sys.executable, "-m", __name__, str(n_prompts), str(n_tokens),
                            model or ""],
                           capture_output=True, text=True, timeout=1800, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    stall, hz = d["max_stall_ms"] or 0.0, d["refresh_hz"]
    det = {"stream_seconds": round(d["seconds"], 2), "p99_gap_ms": d["p99_gap_ms"],
           "prompts": n_prompts, "new_tokens": n_tokens}
    return [Case("GUI max event-loop stall while streaming", stall, None, stall, "<= 50",
                 check(stall, "<= 50"), unit="ms", detail=det),
            Case("GUI heatmap refresh rate while streaming", hz, None, hz, ">= 20",
                 check(hz, ">= 20"), unit="Hz", detail=det)]


PROBE_MS = 5   # the probe timer's interval: a gap longer than this is a stall


def main(argv: list[str]) -> None:
    """The fresh process: open the model, stream the prompts, time the event loop."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from neurolens.gui.process import configure
    configure()          # as `neurolens gui` does, before torch loads
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from neurolens.gui.main_window import MainWindow
    from neurolens.spec.run import GenerationParams
    n_prompts, n_tokens = int(argv[0]), int(argv[1])
    model = (argv[2] if len(argv) > 2 else "") or None
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
    state = {"started": False, "t0": None, "t1": None}

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
            app.quit()
    poller = QTimer()
    poller.timeout.connect(poll)
    poller.start(20)
    w.open_model(model)
    app.exec()
    ref = [x for x in w.refresh_times if state["t0"] <= x <= state["t1"]]
    dur = state["t1"] - state["t0"]
    print(json.dumps({
        "max_stall_ms": (max(gaps) - PROBE_MS / 1e3) * 1e3 if gaps else None,
        "refresh_hz": len(ref) / dur if dur else 0.0, "seconds": dur,
        "p99_gap_ms": float(sorted(gaps)[int(len(gaps) * 0.99)] * 1e3) if gaps else None}))
    w.close()


if __name__ == "__main__":
    main(sys.argv[1:])
