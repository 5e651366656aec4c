"""Make the README screenshots with the app itself (offscreen), driving it like a user.

    python packaging/readme_shots.py docs/ [MODEL]
    python packaging/readme_shots.py --diffusion docs/diffusion.png [PIPELINE] [RHO_PERCENT]

1. main.png     the demo model after running prompt sets: heatmaps, key space, inspector
2. compare.png  a pruned neuron set, compared with the baseline on the same prompts
3. methods.png  Key Space Detection fitted on the arithmetic set, cube members ringed
4. diffusion    the demo diffusion pipeline: memorization subspace fitted in the Methods panel
                (memorized vs the ordinary probe prompts), then Compare: the image grid shows
                baseline | edited | difference rows for the same seeds
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _window():
    """A fresh window (scratch autosave) and a ``wait(condition)`` that pumps the event loop."""
    import tempfile

    from neurolens.gui.app import _app
    from neurolens.gui.main_window import MainWindow

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
    return w, wait


def diffusion(out_png: str, model: str | None = None, rho_percent: float = 1.0) -> int:
    from neurolens.resources import DEMO_DIFFUSION, model_path

    w, wait = _window()
    w.open_model(model or str(model_path(DEMO_DIFFUSION)))
    wait(lambda: w.model_info is not None)
    w.load_shipped_set("diffusion_memorized", 6, split=None, set_name="memorized")
    w.load_shipped_set("diffusion_ordinary", 6, split="eval", set_name="ordinary")
    w.load_shipped_set("diffusion_ordinary", 20, split="probe", set_name="base")
    mp = w.methods_panel
    mp.set_names(w.set_names())
    mp.method.setCurrentText("Memorization subspace")
    mz = mp.form("memorization")
    mz.roles["target"].setCurrentText("memorized")
    mz.roles["base"].setCurrentText("base")
    mz.inputs["rho"].setValue(rho_percent / 100)
    w.right_tabs.setCurrentWidget(mp)
    mp.fit_btn.click()
    wait(lambda: w.method_result is not None)
    # compare memorized + ordinary only
    w.set_prompts([p for p in w.prompts if p[0] != "base"], w.prompt_answers)
    w.compare()
    wait(lambda: w.compare_result is not None)
    wait(lambda: len(w.scatter.points) == len(w.prompts) and not w._umap_pending)
    ok = w.grab().save(out_png)
    w.close()
    print(f"{out_png}: {w.status.text()}")
    return 0 if ok else 1


def main(out_dir: str, model: str | None = None) -> int:
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, wait = _window()

    w.open_model(model)
    wait(lambda: w.model_info is not None)
    for skill, n in (("arithmetic", 16), ("comprehension", 16), ("code", 16), ("refusal", 16)):
        w.load_shipped_set(skill, n)
    w.max_tokens.setValue(48)          # room for the code set's program bodies; each row stops
    w.run()                            # at the end of its answer
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
    ks = w.methods_panel.form("key-space")
    ks.roles["forget"].setCurrentText("arithmetic")
    ks.inputs["alpha"].setValue(2.0)
    ks.roles["keep"].setCurrentText("comprehension")
    ks.inputs["layer"].setText("auto")
    w.method_result = None
    w.methods_panel.fit_btn.click()
    wait(lambda: w.method_result is not None)
    w.grab().save(str(out / "methods.png"))
    w.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--diffusion":
        a = sys.argv[2:]
        raise SystemExit(diffusion(a[0] if a else "docs/diffusion.png",
                                   a[1] if len(a) > 1 else None,
                                   float(a[2]) if len(a) > 2 else 1.0))
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "docs",
                          sys.argv[2] if len(sys.argv) > 2 else None))
