"""The real window, offscreen, driven like a user would (pytest-qt)."""

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings
from PySide6.QtGui import QPolygonF

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, tmp_path):
    from neurolens.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def load(qtbot, w, name):
    w.model_info = None
    w.open_model(name)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=60_000)


def run_and_wait(qtbot, w, timeout=60_000):
    """Run and wait until the GUI thread has handled the result (signals are queued)."""
    w.run()
    assert w.running
    qtbot.waitUntil(lambda: w.last_outputs is not None, timeout=timeout)
    qtbot.waitUntil(lambda: w.layer_map.has_data(), timeout=5000)


def test_load_run_heatmaps_and_click(qtbot, window, tiny_dirs):
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    assert w.model_info["n_layers"] == 2
    assert str(tiny_dirs["llama"]) in w.recent_models()
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(5)
    run_and_wait(qtbot, w)
    assert w.layer_map.data.shape == (2, 64)
    st = w.store.stats("blocks.1.mlp.hook_post")
    np.testing.assert_allclose(w.layer_map.data[1], st.mean, rtol=1e-5)
    qtbot.waitUntil(lambda: w.token_map.has_data(), timeout=5000)
    n_prompt = w.store.prompt_len[0]
    assert w.token_map.data.shape[0] >= n_prompt and w.token_map.data.shape[1] == 64
    assert "Compute" in w.output_label.text()
    # click a cell: selects the neuron and fills the inspector, then the logit lens arrives
    with qtbot.waitSignal(w.worker.lensReady, timeout=10_000):
        w.layer_map.click_cell(1, 7)
    assert w.selection == [("blocks.1.mlp.hook_post", 7)]
    assert "L1.N7" in w.inspector.title.text()
    assert w.inspector.top.count() >= 1
    qtbot.waitUntil(lambda: w.inspector.lens.rowCount() == 10, timeout=5000)
    # shift-click adds; a saved set appears in the side list
    w.layer_map.click_cell(0, 3, additive=True)
    assert len(w.selection) == 2
    assert w.save_selection_as_set("pair") == "pair"
    assert w.sets_list.count() == 1 and "2 neurons" in w.sets_list.item(0).text()


def test_prompt_sets_scatter_and_lasso(qtbot, window, tiny_dirs):
    w = window
    load(qtbot, w, str(tiny_dirs["gpt2"]))
    w.add_prompts(["abc", "abd", "abe", "abf"], "forget")
    w.add_prompts(["xyz", "xyw", "xyv"], "retain")
    w.run_list.setChecked(True)
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)
    qtbot.waitUntil(lambda: len(w.scatter.points) == 7, timeout=20_000)
    assert set(w.set_a.currentText() + w.set_b.currentText()) <= set("forgetretain")
    # difference heatmap between the two sets
    w.set_a.setCurrentText("forget")
    w.set_b.setCurrentText("retain")
    w.stat_combo.setCurrentIndex(1)
    want = (w.store.stats("blocks.0.mlp.hook_post", "forget").mean
            - w.store.stats("blocks.0.mlp.hook_post", "retain").mean)
    np.testing.assert_allclose(w.layer_map.data[0], want, rtol=1e-4, atol=1e-7)
    # lasso around every point -> a new prompt set
    pts = w.scatter.points
    lo, hi = pts.min(0) - 1, pts.max(0) + 1
    poly = QPolygonF([QPointF(lo[0], lo[1]), QPointF(hi[0], lo[1]), QPointF(hi[0], hi[1]),
                      QPointF(lo[0], hi[1])])
    w.scatter.lasso_polygon(poly)
    assert w.set_names() == ["lasso 1"]


def test_cancel_long_run(qtbot, window, tiny_dirs):
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    w.prompt_edit.setPlainText("a long run")
    w.max_tokens.setValue(4000)
    w.stop_eos.setChecked(False)
    w.run()
    qtbot.waitUntil(lambda: 3 < w.progress_bar.value() < 4000 and
                    w.progress_bar.maximum() == 4000, timeout=20_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=10_000)
    assert w.last_outputs is None  # it did not run to the end and w.run_btn.isEnabled()
    assert w.status.text() == "cancelled"
    assert w.progress_bar.value() < 4000
    # still usable
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)


def test_bad_model_folder_shows_dialog_and_app_stays_usable(qtbot, window, tmp_path, tiny_dirs):
    w = window
    (tmp_path / "empty").mkdir()
    w.open_model(str(tmp_path / "empty"))
    qtbot.waitUntil(lambda: w._error_box is not None, timeout=30_000)
    assert w._error_box is not None and w._error_box.isVisible()
    assert "not a model folder" in w._error_box.text()
    assert w.run_btn.isEnabled()
    w._error_box.close()
    load(qtbot, w, str(tiny_dirs["gpt2"]))
    w.prompt_edit.setPlainText("hi")
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)


def test_gui_screenshot_command(tmp_path, tiny_dirs):
    import subprocess
    import sys
    out = tmp_path / "shot.png"
    r = subprocess.run([sys.executable, "-m", "neurolens", "gui", "-m", str(tiny_dirs["gpt2"]),
                        "--screenshot", str(out), "--prompt", "hello"],
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    from PySide6.QtGui import QImage
    img = QImage(str(out))
    assert img.width() > 1000 and img.height() > 600
