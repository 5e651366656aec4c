"""Make the README screenshots with the app itself (offscreen), driving it like a user.

    python packaging/readme_shots.py docs/ [MODEL]

1. main.png     the demo model after running prompt sets: heatmaps, key space, inspector
2. compare.png  a pruned neuron set, compared with the baseline on the same prompts
3. methods.png  Key Space Detection fitted on the arithmetic set, cube members ringed
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(out_dir: str, model: str | None = None) -> int:
    import tempfile

    import numpy as np
    from PySide6.QtWidgets import QApplication

    from neurolens.gui.app import _app
    from neurolens.gui.main_window import MainWindow

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    app: QApplication = _app()
    w = MainWindow(autosave_path=os.path.join(tempfile.mkdtemp(), "autosave.json"))
    w.setWindowIcon(app.windowIcon())
    w.resize(1600, 960)
    w.show()

    def wait(cond, timeout=300.0):
        t0 = time.monotonic()
        while not cond():
            app.processEvents()
            time.sleep(0.02)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("timed out")
        for _ in range(20):
            app.processEvents()
            time.sleep(0.01)

    w.open_model(model)
    wait(lambda: w.model_info is not None)
    for skill, n in (("arithmetic", 16), ("comprehension", 16), ("code", 16), ("refusal", 16)):
        w.load_shipped_set(skill, n)
    w.max_tokens.setValue(8)
    w.run()
    wait(lambda: w.last_outputs is not None)
    wait(lambda: len(w.scatter.points) == 64 and not w._umap_pending, 600)
    m = w.layer_map.data
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    w.layer_map.click_cell(int(r), int(c))
    wait(lambda: w.inspector.lens.rowCount() > 0)
    w.grab().save(str(out / "main.png"))

    # prune the 40 neurons that separate arithmetic from the rest most, then compare
    w.stat_combo.setCurrentIndex(1)
    w.set_a.setCurrentText("arithmetic")
    w.set_b.setCurrentText("comprehension")
    d = w.layer_map.data
    top = np.argsort(-d, axis=None)[:40]
    w.select_neurons([(w.site(int(i // d.shape[1])), int(i % d.shape[1])) for i in top])
    w.right_tabs.setCurrentIndex(1)
    w.edits_panel.op.setCurrentText("prune")
    w.edits_panel.add_for_selection()
    w.compare()
    wait(lambda: w.compare_result is not None)
    w.grab().save(str(out / "compare.png"))

    # Key Space Detection on the arithmetic set: the scatter rings the prompts inside the cube
    w.edits_panel.undo()
    w.center_tabs.setCurrentIndex(0)
    w.stat_combo.setCurrentIndex(0)
    w.run()
    wait(lambda: w.last_outputs is not None)
    wait(lambda: len(w.scatter.points) == 64 and not w._umap_pending, 600)
    w.right_tabs.setCurrentIndex(2)
    w.methods_panel.method.setCurrentText("Key Space Detection")
    w.methods_panel.ks_forget.setCurrentText("arithmetic")
    w.methods_panel.ks_alpha.setValue(2.0)
    w.method_result = None
    w.methods_panel.fit_btn.click()
    wait(lambda: w.method_result is not None)
    w.grab().save(str(out / "methods.png"))
    w.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "docs",
                          sys.argv[2] if len(sys.argv) > 2 else None))
