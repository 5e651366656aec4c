"""README screenshot of the diffusion workflow, made with the app itself (offscreen):

    python packaging/diffusion_shot.py docs/diffusion.png [PIPELINE]

Loads the demo diffusion pipeline, runs memorized and ordinary prompts, fits the memorization
subspace in the Methods panel (memorized vs ordinary-probe), compares, and saves the window: the
image grid shows baseline | edited | difference rows for the same seeds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(out_png: str, model: str | None = None, rho: float = 1.0) -> int:
    from neurolens.gui.app import _app
    from neurolens.gui.main_window import MainWindow
    from neurolens.resources import DEMO_DIFFUSION, model_path

    app = _app()
    w = MainWindow(autosave_path=os.path.join(tempfile.mkdtemp(), "autosave.json"))
    w.setWindowIcon(app.windowIcon())
    w.resize(1600, 960)
    w.show()

    def wait(cond, timeout=600.0):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.02)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("timed out")
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)

    w.open_model(model or str(model_path(DEMO_DIFFUSION)))
    wait(lambda: w.model_info is not None)
    w.load_shipped_set("diffusion_memorized", 6, split=None, set_name="memorized")
    w.load_shipped_set("diffusion_ordinary", 6, split="eval", set_name="ordinary")
    w.load_shipped_set("diffusion_ordinary", 20, split="probe", set_name="base")
    w.run_list.setChecked(True)
    # compare only the first 12 prompts (memorized + ordinary); the base set feeds the method
    w.prompts = [p for p in w.prompts if p[0] != "base"] + [p for p in w.prompts
                                                            if p[0] == "base"]
    mp = w.methods_panel
    mp.set_names(w.set_names())
    mp.method.setCurrentText("Memorization subspace")
    mp.mz_target.setCurrentText("memorized")
    mp.mz_base.setCurrentText("base")
    mp.mz_rho.setValue(rho)
    w.right_tabs.setCurrentWidget(mp)
    mp.fit_btn.click()
    wait(lambda: w.method_result is not None)
    w.prompts = [p for p in w.prompts if p[0] != "base"]
    w._fill_prompt_table()
    w.compare()
    wait(lambda: w.compare_result is not None)
    w.layer_spin.setValue(w.model_info["site_list"].index(
        next(s for s, a in w.model_info["aliases"].items() if a.startswith("mid"))))
    wait(lambda: w.token_map.has_data(), 60)
    ok = w.grab().save(out_png)
    w.close()
    print(f"{out_png}: {w.status.text()}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None,
                          float(sys.argv[3]) if len(sys.argv) > 3 else 1.0))
