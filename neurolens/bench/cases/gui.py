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
import sys
import tempfile

from neurolens.bench.measure import Case, check, fresh_process


def case(n_prompts: int, n_tokens: int, model: str | None = None) -> list[Case]:
    # a settings folder of its own: the scripted window never touches the user's recent models
    # or autosave (see neurolens.gui.settings)
    with tempfile.TemporaryDirectory(prefix="neurolens-bench-settings-") as settings:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NEUROLENS_SETTINGS_DIR": settings}
        d = fresh_process(__name__, [n_prompts, n_tokens, model or ""], timeout=1800, env=env)
    stall, hz = d["max_stall_ms"] or 0.0, d["refresh_hz"]
    det = {"stream_seconds": round(d["seconds"], 2), "p99_gap_ms": d["p99_gap_ms"],
           "prompts": n_prompts, "new_tokens": n_tokens}
    return [Case("GUI max event-loop stall while streaming", stall, None, stall, "<= 50",
                 check(stall, "<= 50"), unit="ms", detail=det),
            Case("GUI heatmap refresh rate while streaming", hz, None, hz, ">= 20",
                 check(hz, ">= 20"), unit="Hz", detail=det)]


def main(argv: list[str]) -> None:
    """The fresh process: open the model, stream the prompts, time the event loop."""
    from neurolens.bench.gui_stream import stream
    stats, _ = stream(int(argv[0]), int(argv[1]), argv[2] if len(argv) > 2 else None)
    print(json.dumps(stats))


if __name__ == "__main__":
    main(sys.argv[1:])
