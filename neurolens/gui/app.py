"""Start the desktop app (and the --screenshot mode used for the README and smoke tests)."""

from __future__ import annotations

import os
import sys
import time

from neurolens.gui import platform_check


def _platform_problem(screenshot: str | None) -> str | None:
    """Before any Qt import: the one-line error when a window cannot open because Qt's xcb
    platform plugin lacks system libraries (Qt itself would abort naming one package at a
    time). A --screenshot run needs no window: it goes offscreen when there is no display or
    the xcb plugin cannot load, unless the user chose a platform."""
    if screenshot:
        if not os.environ.get("QT_QPA_PLATFORM") and (not os.environ.get("DISPLAY")
                                                      or platform_check.check()):
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return None
    return platform_check.check()


def _app():
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName("neurolens")
    app.setOrganizationName("neurolens")
    from neurolens.gui.icons import app_icon
    icon = app_icon()
    if icon is not None:
        app.setWindowIcon(icon)
    return app


def _is_pipeline(model: str | None) -> bool:
    from pathlib import Path
    return bool(model) and (Path(model) / "model_index.json").is_file()


def _is_snn(model: str | None) -> bool:
    from pathlib import Path
    cfg = Path(model or "") / "config.json"
    return bool(model) and cfg.is_file() and '"neurolens-snn"' in cfg.read_text()


def _memorized_prompts() -> list[str]:
    import json

    from neurolens.resources import prompts_dir
    f = prompts_dir() / "diffusion_memorized.jsonl"
    if not f.is_file():
        return [f"exhibit {c}" for c in (101, 202, 303, 404)]
    return [json.loads(x)["prompt"] for x in f.read_text().splitlines() if x.strip()]


def run_gui(model: str | None = None, screenshot: str | None = None, prompt: str | None = None,
            timeout: float = 300.0, tab: str | None = None) -> int:
    """Open the main window. With ``screenshot``: load, run, wait for data, save PNG, exit
    (``tab="attention"``: then the Attention tab, its head summaries and a head's pattern)."""
    problem = _platform_problem(screenshot)
    if problem:
        print(problem, file=sys.stderr)
        return platform_check.EXIT_CODE
    import pyqtgraph as pg
    from PySide6.QtCore import QTimer
    pg.setConfigOptions(antialias=True, imageAxisOrder="row-major")
    app = _app()
    from neurolens.gui.main_window import MainWindow
    autosave = None
    if screenshot:  # never touch the user's autosave from a scripted run
        import tempfile
        autosave = os.path.join(tempfile.mkdtemp(prefix="neurolens-shot-"), "autosave.json")
    win = MainWindow(autosave_path=autosave)
    if app.windowIcon() is not None and not app.windowIcon().isNull():
        win.setWindowIcon(app.windowIcon())
    win.show()
    if prompt:
        win.prompt_edit.setPlainText(prompt.replace("\\n", "\n"))
    if not screenshot:
        win.projector.warm_up()
        win.open_model(model)
        QTimer.singleShot(300, win.offer_restore)
        return app.exec()

    result = {"code": None}
    t0 = time.monotonic()
    if not prompt and _is_pipeline(model):
        win.add_prompts([f"a handwritten digit {d}" for d in range(8)], "ordinary")
        win.add_prompts(_memorized_prompts()[:4], "memorized")
        win.run_list.setChecked(True)
        win.prompt_edit.setPlainText("a handwritten digit 3")
    elif _is_snn(model):
        win.shipped_n.setValue(64)        # the shipped probe set loads with the network
    elif not prompt:
        for skill, n in (("arithmetic", 10), ("comprehension", 10), ("code", 10),
                         ("refusal", 10)):
            win.load_shipped_set(skill, n)
        win.prompt_edit.setPlainText("Compute: 47+38=")
    win._pending_run_after_load = True

    def check():
        if result["code"] is not None:
            return
        if win.errors:
            print(f"neurolens: error: {win.errors[-1].splitlines()[-1]}", file=sys.stderr)
            result["code"] = 2
            app.exit(2)
            return
        n_prompts = len(win._current_req.prompts) if win._current_req else 0
        ready = (win.last_outputs is not None and win.layer_map.has_data()
                 and (win.token_map.has_data() or win.rasters.has_data())
                 and (not win.snn.active or win.snn.overview is not None)
                 and (not win.diffusion or win.image_grid.canvas is not None)
                 and (n_prompts < 2 or "scatter" not in win.family.panels
                      or len(win.scatter.points) == n_prompts))
        if ready and win._umap_pending and time.monotonic() - t0 < timeout * 0.5:
            return  # give UMAP a chance to swap in
        if ready:
            if win.selection == [] and win.model_info:
                r, c = win.family.showcase_cell(win.layer_map.data)
                win.layer_map.click_cell(r, c)
                return
            if tab == "attention" and not win.attention.screenshot_step():
                return
            app.processEvents()
            ok = win.grab().save(screenshot)
            result["code"] = 0 if ok else 1
            if not ok:
                print(f"neurolens: error: could not write {screenshot}", file=sys.stderr)
            app.exit(result["code"])
        elif time.monotonic() - t0 > timeout:
            print("neurolens: error: timed out waiting for the views to show data",
                  file=sys.stderr)
            result["code"] = 1
            app.exit(1)

    timer = QTimer()
    timer.timeout.connect(check)
    timer.start(200)
    win.open_model(model)
    code = app.exec()
    timer.stop()
    win.close()
    return result["code"] if result["code"] is not None else code
