"""The real window, offscreen, driven like a user would (pytest-qt)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings
from PySide6.QtGui import QPolygonF

from conftest import needs_demo

pytestmark = pytest.mark.gui

#: limits for waits on a condition (qtbot.waitUntil returns as soon as it holds): generous, so a
#: loaded machine is slow rather than failing
WAIT = 60_000
LONG = 180_000


@pytest.fixture
def window(qtbot, tmp_path):
    from neurolens.gui.main_window import MainWindow
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, autosave_path=str(tmp_path / "autosave.neurolens.json"))
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def load(qtbot, w, name):
    w.model_info = None
    w.open_model(name)
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT)


def run_and_wait(qtbot, w, timeout=LONG):
    """Run and wait until the GUI thread has handled the result (signals are queued)."""
    w.run()
    assert w.running
    qtbot.waitUntil(lambda: w.last_outputs is not None, timeout=timeout)
    qtbot.waitUntil(lambda: w.layer_map.has_data(), timeout=WAIT)


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
    qtbot.waitUntil(lambda: w.token_map.has_data(), timeout=WAIT)
    n_prompt = w.store.prompt_len[0]
    assert w.token_map.data.shape[0] >= n_prompt and w.token_map.data.shape[1] == 64
    assert "Compute" in w.output_label.text()
    # click a cell: selects the neuron and fills the inspector, then the logit lens arrives
    w.layer_map.click_cell(1, 7)
    assert w.selection == [("blocks.1.mlp.hook_post", 7)]
    assert "L1.N7" in w.inspector.title.text()
    assert w.inspector.top.count() >= 1
    qtbot.waitUntil(lambda: w.inspector.lens.rowCount() == 10, timeout=WAIT)
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
    qtbot.waitUntil(lambda: len(w.scatter.points) == 7, timeout=WAIT)
    # the set combos list the sets in the order they were added; A and B default to different sets
    for combo in (w.set_a, w.set_b):
        assert [combo.itemText(i) for i in range(combo.count())] == ["forget", "retain"]
    assert (w.set_a.currentText(), w.set_b.currentText()) == ("forget", "retain")
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
    assert not w.run_btn.isEnabled() and w.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: w.progress_bar.maximum() == 4000 and w.progress_bar.value() > 3,
                    timeout=LONG)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=WAIT)
    # it did not run to the end, and the buttons are back to idle
    assert w.last_outputs is None and w.run_btn.isEnabled() and not w.cancel_btn.isEnabled()
    assert w.status.text() == "cancelled"
    assert w.progress_bar.value() < 4000
    # still usable
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)


def test_bad_model_folder_shows_dialog_and_app_stays_usable(qtbot, window, tmp_path, tiny_dirs):
    w = window
    (tmp_path / "empty").mkdir()
    w.open_model(str(tmp_path / "empty"))
    qtbot.waitUntil(lambda: w._error_box is not None, timeout=WAIT)
    assert w._error_box is not None and w._error_box.isVisible()
    assert "not a model folder" in w._error_box.text()
    assert w.run_btn.isEnabled()
    w._error_box.close()
    load(qtbot, w, str(tiny_dirs["gpt2"]))
    w.prompt_edit.setPlainText("hi")
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)


def users_settings():
    """The user's own settings store, as the app names it without NEUROLENS_SETTINGS_DIR:
    (where, every key and value, the file's bytes where it is a file)."""
    s = QSettings("neurolens", "neurolens")
    s.sync()
    f = Path(s.fileName())
    return s.fileName(), {k: s.value(k) for k in s.allKeys()}, (
        f.read_bytes() if f.is_file() else None)


def recent_in(folder) -> list[str]:
    v = QSettings(str(folder / "neurolens.ini"), QSettings.Format.IniFormat).value(
        "recent_models", [])
    return [v] if isinstance(v, str) else list(v or [])


def test_windows_keep_settings_and_autosave_in_the_test_folder(qtbot, isolated_settings,
                                                                tiny_dirs):
    """A window opened with the defaults (as `neurolens gui` opens it) reads and writes the
    settings and autosave in NEUROLENS_SETTINGS_DIR, which conftest points at a temporary folder
    for the whole run: the user's own store stays byte for byte as it was."""
    from neurolens.gui.main_window import MainWindow
    before = users_settings()
    assert os.environ["NEUROLENS_SETTINGS_DIR"] == str(isolated_settings)
    w = MainWindow()
    qtbot.addWidget(w)
    assert Path(w.settings.fileName()) == isolated_settings / "neurolens.ini"
    assert w.autosave_path == isolated_settings / "autosave.neurolens.json"
    load(qtbot, w, str(tiny_dirs["gpt2"]))       # a loaded model joins the recent models
    w.autosave()
    assert w.autosave_path.is_file()
    w.close()
    w.settings.sync()
    after = users_settings()
    assert after == before and str(tiny_dirs["gpt2"]) not in repr(after[1])
    assert recent_in(isolated_settings)[0] == str(tiny_dirs["gpt2"])


@pytest.mark.slow
def test_gui_screenshot_command(tmp_path, tiny_dirs, isolated_settings):
    import subprocess
    import sys
    out = tmp_path / "shot.png"
    before = users_settings()
    r = subprocess.run([sys.executable, "-m", "neurolens", "gui", "-m", str(tiny_dirs["gpt2"]),
                        "--screenshot", str(out), "--prompt", "hello"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    from PySide6.QtGui import QImage
    img = QImage(str(out))
    assert img.width() > 1000 and img.height() > 600
    # the subprocess inherited NEUROLENS_SETTINGS_DIR: its recent models went to the test folder
    assert str(tiny_dirs["gpt2"]) in recent_in(isolated_settings)
    assert users_settings() == before


def prune_layer(w, layer=1, n=64):
    """Select a whole layer by a rectangle drag and add a prune edit for it."""
    w.layer_map.cellsSelected.emit([(layer, c) for c in range(n)])
    w.right_tabs.setCurrentIndex(1)
    w.edits_panel.op.setCurrentText("prune")
    assert w.edits_panel.add_for_selection() == 1


def test_prune_compare_undo_export_reload(qtbot, window, tiny_dirs, tmp_path):
    from transformers import AutoModelForCausalLM
    import torch
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(6)
    run_and_wait(qtbot, w)
    baseline = w.last_outputs["outputs"][0]
    prune_layer(w)
    assert w.edit_model.ops[0].op == "prune" and len(w.edit_model.ops[0].neurons) == 64
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    it = w.compare_result["items"][0]
    assert it["base_text"] == baseline and it["changed"]
    assert it["first_divergence"] is not None
    assert "diverges at token" in w.compare_view.texts.toHtml()
    assert w.center_tabs.currentWidget() is w.compare_view
    # the heatmaps can show the difference edited - baseline: layer 1 (pruned) drops to -mean
    w.center_tabs.setCurrentIndex(0)
    w.show_combo.setCurrentIndex(2)
    diff = w.layer_map.data
    base_mean = w.store_base.stats("blocks.1.mlp.hook_post").mean
    np.testing.assert_allclose(diff[1], -base_mean, rtol=1e-4, atol=1e-6)
    # undo the edit: the run gives the baseline output again
    w.edits_panel.undo()
    assert w.edit_model.ops == [] and w.current_edits() is None
    run_and_wait(qtbot, w)
    assert w.last_outputs["outputs"][0] == baseline
    w.edits_panel.redo()
    assert len(w.edit_model.ops) == 1
    # disabling the edit also restores the baseline
    w.edits_panel.set_enabled(0, False)
    assert w.current_edits() is None
    w.edits_panel.set_enabled(0, True)
    # export, the reload check passes, plain transformers reproduces the edited output
    out = tmp_path / "exported"
    w.export_model(str(out))
    qtbot.waitUntil(lambda: w.export_result is not None, timeout=WAIT)
    r = w.export_result
    assert r["baked"] and not r["sidecar"]
    assert r["check"]["same_output"] and r["check"]["max_abs_logit_diff"] < 1e-4
    assert "Reload check" in w.export_message and "passed" in w.export_message
    m = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = w.worker.lm.encode(["Compute: 47+38="])
    with torch.no_grad():
        g = m.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    text = w.worker.lm.tokenizer.decode(g[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.startswith(it["edit_text"][:len(text)]) and it["edit_text"].startswith(text)


def test_edits_import_export_and_notes(qtbot, window, tiny_dirs, tmp_path):
    import neurolens as nl
    w = window
    load(qtbot, w, str(tiny_dirs["gpt2"]))
    w.select_neurons([("blocks.0.mlp.hook_post", 3), ("blocks.0.mlp.hook_post", 9),
                      ("blocks.1.mlp.hook_pre", 2)])
    w.edits_panel.op.setCurrentText("scale")
    w.edits_panel.amount.setValue(0.25)
    w.edits_panel.positions.setCurrentText("last")
    assert w.edits_panel.add_for_selection() == 2
    w.edits_panel.edit_note(0, "dampen")
    w.export_edits(str(tmp_path / "e.json"))
    es = nl.EditSet.load(tmp_path / "e.json")
    assert [(o.op, o.site, o.neurons, o.factor, o.positions) for o in es] == [
        ("scale", "blocks.0.mlp.hook_post", [3, 9], 0.25, "last"),
        ("scale", "blocks.1.mlp.hook_pre", [2], 0.25, "last")]
    assert es[0].note == "dampen" and es.model.fingerprint == w.model_info["fingerprint"]
    w.edits_panel.undo()   # note
    w.edits_panel.undo()   # add
    assert w.edit_model.ops == []
    assert w.import_edits(str(tmp_path / "e.json"))
    assert len(w.edit_model.ops) == 2 and w.edit_model.ops[0].note == "dampen"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "neurolens.edits/1", "edits": [{"op": "zap", "site": "x"}]}')
    assert not w.import_edits(str(bad))
    assert "unknown op 'zap'" in w._error_box.text()


def test_session_round_trip(qtbot, window, tiny_dirs, tmp_path):
    from neurolens.gui.main_window import MainWindow
    w = window
    load(qtbot, w, str(tiny_dirs["gpt2"]))
    w.add_prompts(["abc", "abd"], "forget")
    w.add_prompts(["xyz"], "retain")
    w.prompt_edit.setPlainText("typed text")
    w.select_neurons([("blocks.1.mlp.hook_post", 4), ("blocks.1.mlp.hook_post", 5)])
    w.save_selection_as_set("pair")
    w.edits_panel.add_for_selection()
    w.max_tokens.setValue(7)
    w.seed.setValue(42)
    path = tmp_path / "s.neurolens.json"
    w.save_session(str(path))
    from neurolens.spec.session import Session
    assert Session.load(path).model == str(tiny_dirs["gpt2"])
    settings = QSettings(str(tmp_path / "settings2.ini"), QSettings.Format.IniFormat)
    w2 = MainWindow(settings=settings, autosave_path=str(tmp_path / "other-autosave.json"))
    qtbot.addWidget(w2)
    assert w2.open_session(str(path), load_model=False)
    assert w2.prompts == [("forget", "abc"), ("forget", "abd"), ("retain", "xyz")]
    assert w2.prompt_edit.toPlainText() == "typed text"
    assert w2.neuron_sets == {"pair": [("blocks.1.mlp.hook_post", 4),
                                       ("blocks.1.mlp.hook_post", 5)]}
    assert [(o.op, o.neurons) for o in w2.edit_model.ops] == [("prune", [4, 5])]
    assert w2.max_tokens.value() == 7 and w2.seed.value() == 42
    w2.close()


def test_autosave_restores_after_a_kill(qtbot, tmp_path, tiny_dirs):
    """Simulate a crash: a window autosaves, is never closed cleanly; a fresh window restores."""
    from neurolens.gui.main_window import MainWindow
    auto = tmp_path / "autosave.neurolens.json"
    w = MainWindow(autosave_path=str(auto))
    qtbot.addWidget(w)
    w.AUTOSAVE_MS = 50
    w.autosave_timer.setInterval(50)
    w.add_prompts(["keep me"], "mine")
    w.select_neurons([("blocks.0.mlp.hook_post", 1)])
    w.save_selection_as_set("one")
    w.edits_panel.add_for_selection()
    qtbot.waitUntil(lambda: auto.is_file() and not w._dirty, timeout=WAIT)
    # the process dies here: no closeEvent, so the autosave stays
    w.autosave_timer.stop()
    fresh = MainWindow(autosave_path=str(auto))
    qtbot.addWidget(fresh)
    assert fresh.has_autosave()
    assert fresh.restore_autosave(load_model=False)
    assert fresh.prompts == [("mine", "keep me")]
    assert fresh.neuron_sets == {"one": [("blocks.0.mlp.hook_post", 1)]}
    assert [o.op for o in fresh.edit_model.ops] == ["prune"]
    fresh.close()
    assert not auto.exists()   # a clean close removes it
    w.thread.quit()
    assert w.thread.wait(WAIT)


def test_autosave_comes_during_a_steady_stream_of_changes_not_after_it(qtbot, tmp_path,
                                                                       monkeypatch):
    """The autosave timer starts at the first change and later changes do not restart it: a
    stream of changes faster than the interval is saved while it goes on (a debounce would wait
    for the stream to stop: a user who keeps working would never be saved), one interval after
    the change that started the timer, and not on every change."""
    from PySide6.QtCore import QElapsedTimer, QTimer

    from neurolens.gui.main_window import MainWindow
    from neurolens.spec.session import Session
    auto = tmp_path / "autosave.neurolens.json"
    saves = []                      # (ms since the first change, the change it holds)
    real_save = Session.save

    def save(self, path):
        if Path(path) == auto:
            saves.append((clock.elapsed(), self.generation["seed"]))
        return real_save(self, path)

    monkeypatch.setattr(Session, "save", save)
    w = MainWindow(autosave_path=str(auto))
    qtbot.addWidget(w)
    interval = 1000
    w.autosave_timer.setInterval(interval)
    clock = QElapsedTimer()
    clock.start()
    w.seed.setValue(1)              # change number 1: the seed holds the number of changes
    assert saves == [] and w._dirty and w.autosave_timer.isActive()   # not saved at once
    stream_ms = 12 * interval       # the stream stops here, or once two saves came during it

    def change():
        if clock.elapsed() > stream_ms or len(saves) >= 2:
            ticker.stop()
            return
        w.seed.setValue(w.seed.value() + 1)

    ticker = QTimer()
    ticker.setInterval(20)          # 50 changes a second, far faster than the autosave
    ticker.timeout.connect(change)
    ticker.start()
    qtbot.waitUntil(lambda: not ticker.isActive(), timeout=LONG)
    n_changes = w.seed.value()
    # two saves while the changes kept coming (more came between them), the first one
    # interval after the change that started the timer
    assert len(saves) == 2 and saves[1][0] < stream_ms, (saves, n_changes)
    assert saves[0][1] < saves[1][1] <= n_changes
    assert saves[0][0] >= 0.9 * interval            # Qt's coarse timers may fire 5% early
    # the stream has stopped: the last change is saved too
    qtbot.waitUntil(lambda: not w._dirty, timeout=WAIT)
    assert Session.load(auto).generation["seed"] == n_changes


def test_methods_panel_fits_and_adds_edits(qtbot, window, tiny_dirs):
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    w.add_prompts([f"Compute: {a}+{a}=" for a in range(10, 22)], "forget")
    w.add_prompts([f"Story: Mia has a {c} kite." for c in ("red", "blue", "green", "gold",
                                                          "pink", "gray")], "retain")
    w.run_list.setChecked(True)
    # before the first run the views say how to fill them
    assert w.layer_map.hint is not None and w.token_map.hint is not None
    assert w.scatter.hint is not None
    # ...and are laid out for the loaded model's data already: the first data moves no range
    assert w.layer_map._shape == (2, 64)
    assert [list(r) for r in w.layer_map.vb.viewRange()] == [[0, 64], [0, 2]]
    assert list(w.token_map.vb.viewRange()[0]) == [0, 64]
    w.max_tokens.setValue(2)
    run_and_wait(qtbot, w)
    qtbot.waitUntil(lambda: len(w.scatter.points) == 18, timeout=WAIT)
    assert w.layer_map.hint is None and w.token_map.hint is None and w.scatter.hint is None
    panel = w.methods_panel
    na, ks = panel.form("Neuron Adjust"), panel.form("Key Space Detection")
    assert na.roles["forget"].currentText() == "forget"
    assert na.roles["retain"].currentText() == "retain"
    panel.method.setCurrentText("Neuron Adjust")
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert [o.op for o in w.edit_model.ops] == ["adjust"] * len(w.edit_model.ops)
    n_sel = round(0.03 * 2 * 64)
    assert len(w.selection) == n_sel           # the selected neurons are shown
    # ...marked on the post-activation map too: gate neuron j is the FFN's neuron j
    assert w.kind_combo.currentText() == "mlp.hook_post"
    assert {s.rsplit(".", 1)[1] for s, _ in w.selection} == {"hook_pre"}
    assert sorted(w.layer_map._marks) == sorted({(int(s.split(".")[1]), j) for s, j in w.selection})
    marks = list(w.layer_map._marks)
    w.kind_combo.setCurrentText("mlp.hook_pre")      # the fitted kind itself: the same cells
    assert w.layer_map._marks == marks
    w.kind_combo.setCurrentText("mlp.hook_post")
    assert "answers probed" not in w.method_result["text"]    # typed prompts have none
    w.method_result = None
    panel.method.setCurrentText("Key Space Detection")
    ks.inputs["alpha"].setValue(1.0)
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert w.edit_model.ops[-1].op == "gate"
    inside = w.method_result["inside"]
    assert inside[:12] == [True] * 12          # the forget prompts fall inside the cube
    assert w.scatter.inside is not None and w.scatter.inside.sum() >= 12
    w.edits_panel.undo()
    assert w.edit_model.ops[-1].op == "adjust"
    # the layer chosen on the data: the forget set in, the keep set out
    w.method_result = None
    assert ks.roles["keep"].currentText() == "retain"
    ks.inputs["layer"].setText("auto")
    assert panel.params() == ("Key Space Detection", {"forget": "forget", "keep": "retain",
                                                      "alpha": 1.0, "layer": "auto"})
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert "chosen:" in w.method_result["text"] and "'retain'" in w.method_result["text"]
    assert w.edit_model.ops[-1].op == "gate"
    assert w.method_result["inside"][12:] == [False] * 6     # no retain prompt inside


def test_neuron_adjust_probes_the_answers_of_a_loaded_set(qtbot, window, tiny_dirs, tmp_path):
    """A JSONL file's answers are kept: Neuron Adjust probes prompt + answer (the default) or
    the prompts alone, and the loaded rows stop where their answers end."""
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"prompt": f"Compute: {a}+{a}=", "answer": str(2 * a)})
                              + "\n" for a in range(10, 22)))
    w.load_prompt_file(str(forget))
    w.add_prompts([f"Story: Mia has a {c} kite." for c in ("red", "blue", "green")], "retain")
    assert w.prompt_answers["Compute: 10+10="] == "20"
    sent = []
    w.methods.fitSubmitted.connect(lambda method, params, sets: sent.append(sets))
    panel = w.methods_panel
    panel.method.setCurrentText("Neuron Adjust")
    na = panel.form()
    na.roles["forget"].setCurrentText("forget")
    na.roles["retain"].setCurrentText("retain")
    assert na.answers.isChecked()
    for with_answers in (True, False):
        na.answers.setChecked(with_answers)
        w.method_result = None
        panel.fit_btn.click()
        qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
        assert ("answers probed too" in w.method_result["text"]) is with_answers
    assert sent[0]["forget"][0] == "Compute: 10+10=20" and sent[1]["forget"][0] == "Compute: 10+10="
    assert sent[0]["retain"] == sent[1]["retain"]
    assert len(w.edit_model.ops) >= 2


def test_neurostrike_form_takes_all_other_sets_with_their_answers(qtbot, window, tiny_dirs,
                                                                   tmp_path):
    """NeuroStrike's form picks the refusal set as harmful and "all other sets" as benign; the
    benign sets go to the fit as prompt + answer (or prompts, with the box off), the harmful
    requests as prompts alone. Neuron Adjust's retain set can be all other sets as well."""
    from neurolens.gui.views.methods_panel import ALL_OTHERS
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    for name, rows in (("arithmetic", [(f"Compute: {a}+{a}=", str(2 * a)) for a in range(10, 16)]),
                       ("refusal", [(f"User: Tell me the {t} PIN.\nAssistant:",
                                     " I can't help with that.") for t in ("bank", "safe", "lab")]),
                       ("benign", [(f"User: Echo {t}.\nAssistant:", f" {t}")
                                   for t in ("bee", "cat", "owl")])):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in rows))
        w.load_prompt_file(str(f))
    panel = w.methods_panel
    panel.method.setCurrentText("NeuroStrike")
    na, ks, ns = (panel.form(m).roles for m in ("Neuron Adjust", "Key Space Detection",
                                                 "NeuroStrike"))
    assert panel.form() is panel.form("neurostrike")
    assert ns["harmful"].currentText() == "refusal"
    assert ns["benign"].currentText() == ALL_OTHERS and panel.form().answers.isChecked()
    sent = []
    w.methods.fitSubmitted.connect(lambda method, params, sets: sent.append(sets))
    for with_answers in (True, False):
        panel.form().answers.setChecked(with_answers)
        w.method_result = None
        panel.fit_btn.click()
        qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
        assert "3 harmful prompts against 9 benign texts" in w.method_result["text"]
        assert ("answers probed too" in w.method_result["text"]) is with_answers
    assert sent[0]["harmful"] == sent[1]["harmful"] == [
        f"User: Tell me the {t} PIN.\nAssistant:" for t in ("bank", "safe", "lab")]
    assert sent[0]["benign"][0] == "Compute: 10+10=20" and sent[1]["benign"][0] == "Compute: 10+10="
    assert sent[0]["benign"][-1] == "User: Echo owl.\nAssistant: owl"
    # Neuron Adjust: forget arithmetic, retain every other set (the default with 3+ sets)
    panel.method.setCurrentText("Neuron Adjust")
    assert na["forget"].currentText() == "arithmetic"
    assert na["retain"].currentText() == ks["keep"].currentText() == ALL_OTHERS
    w.method_result = None
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert len(sent[2]["retain"]) == 6 and sent[2]["retain"][0].endswith("I can't help with that.")
    assert len(sent[2]["forget"]) == 6
    # a set named like the choice is still a set of its own; "harmless" is not taken for harmful
    w.add_prompts(["User: Echo elk.\nAssistant:"], ALL_OTHERS)
    w.add_prompts(["User: Echo yak.\nAssistant:"], "harmless")
    assert ns["harmful"].currentText() == "refusal"
    na["retain"].setCurrentIndex(na["retain"].findText(ALL_OTHERS))  # the user's set
    assert panel.params()[1]["retain"] == ALL_OTHERS
    w.method_result = None
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert sent[-1]["retain"] == ["User: Echo elk.\nAssistant:"]
    # NeuroStrike refuses one set on both sides, in a dialog
    panel.method.setCurrentText("NeuroStrike")
    ns["benign"].setCurrentText("refusal")
    w.method_result, n_errors = None, len(w.errors)
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: len(w.errors) > n_errors, timeout=WAIT)
    assert "harmful and benign must be different" in w.errors[-1] and w.method_result is None
    ns["benign"].setCurrentIndex(ns["benign"].findData("benign"))
    # a set the user picks stays picked when more sets load; the others keep their defaults
    ns["harmful"].setCurrentText("benign")
    ns["harmful"].activated.emit(ns["harmful"].currentIndex())
    w.add_prompts(["Story: Mia has a red kite."], "comprehension")
    assert ns["harmful"].currentText() == "benign"
    assert ns["benign"].currentText() == ALL_OTHERS
    assert na["forget"].currentText() == "arithmetic"


def test_diffusion_pipeline_run_steps_compare_export(qtbot, window, tiny_pipeline_dir, tmp_path):
    """A diffusion pipeline: images form step by step, per-step heatmaps, image compare."""
    w = window
    load(qtbot, w, str(tiny_pipeline_dir))
    assert w.diffusion and w.model_info["kind"] == "diffusion"
    assert w.image_grid.isVisible() and not w.output_label.isVisible()
    sites = w.model_info["site_list"]
    w.add_prompts(["a handwritten digit 1", "a handwritten digit 2"], "ordinary")
    w.add_prompts(["exhibit 101"], "memorized")
    w.run_list.setChecked(True)
    w.steps_spin.setValue(5)
    run_and_wait(qtbot, w)
    assert w.last_images.shape == (3, 16, 16, 1)
    assert w.image_grid.canvas is not None
    # layer x neuron: one row per UNet FFN block, padded to the widest block
    widths = [w.model_info["sites"][s] for s in sites]
    assert w.layer_map.data.shape == (len(sites), max(widths))
    # step view: rows are denoising steps of the chosen block and prompt
    w.layer_spin.setValue(1)
    qtbot.waitUntil(lambda: w.token_map.data.shape[0] == 5, timeout=WAIT)
    assert w.token_map.data.shape == (5, widths[1])
    # the step slider picks one denoising step: the mean over prompts at that step
    w.step_spin.setValue(2)
    want = np.mean([w.store.rows(sites[1], i, step=2)[0] for i in range(3)], axis=0)
    np.testing.assert_allclose(w.layer_map.data[1, :widths[1]], want, rtol=1e-5, atol=1e-7)
    w.step_spin.setValue(-1)
    # select neurons of the mid block, prune them, compare images
    w.layer_spin.setValue(1)
    w.layer_map.cellsSelected.emit([(1, c) for c in range(widths[1])])
    assert len(w.selection) == widths[1] and w.selection[0][0] == sites[1]
    assert "mid.a0.t0.N0" in w.selection_label.text()
    w.edits_panel.op.setCurrentText("prune")
    assert w.edits_panel.add_for_selection() == 1
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    r = w.compare_result
    assert r["diffusion"] and r["before"].shape == r["after"].shape == (3, 16, 16, 1)
    assert max(r["mean_abs_diff"]) > 1e-4
    assert len(w.image_grid.rows) == 3 and "baseline | edited" in w.image_grid.caption.text()
    # export reloads in plain diffusers and reproduces the in-app edited images
    w.export_model(str(tmp_path / "exp"))
    qtbot.waitUntil(lambda: w.export_result is not None, timeout=WAIT)
    assert w.export_result["baked"] and w.export_result["check"]["same_output"]
    assert "passed" in w.export_message


def test_memorization_method_in_the_methods_panel(qtbot, window, tiny_pipeline_dir):
    w = window
    load(qtbot, w, str(tiny_pipeline_dir))
    mp = w.methods_panel
    assert mp.method.currentText() == "Memorization subspace"
    # the registry's methods for pipelines only: no LM method is offered
    assert [mp.method.itemText(i) for i in range(mp.method.count())] == ["Memorization subspace"]
    mz = mp.form()
    w.add_prompts(["exhibit 101", "exhibit 202"], "memorized")
    w.add_prompts(["a handwritten digit 1", "a handwritten digit 2"], "ordinary")
    mp.set_names(w.set_names())
    mz.roles["target"].setCurrentText("memorized")
    mz.roles["base"].setCurrentText("ordinary")
    mz.inputs["rho"].setValue(0.05)
    mz.inputs["tau"].setValue(2)
    mz.inputs["steps"].setValue(3)          # the probe runs' denoising steps
    mp.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert "Memorization subspace" in w.method_result["text"]
    assert w.edit_model.ops and all(op.op == "wmask" for op in w.edit_model.ops)


@pytest.mark.slow
@needs_demo
def test_demo_model_prune_changes_the_answer_undo_and_export_restore(qtbot, window, tmp_path):
    """The acceptance path on the shipped demo model: a pruned neuron set changes the answer of a
    prompt the model gets right, undo gives the right answer back, the export reloads equal."""
    from neurolens.resources import model_path
    w = window
    load(qtbot, w, str(model_path()))
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(4)
    run_and_wait(qtbot, w)
    baseline = w.last_outputs["outputs"][0]
    assert baseline.startswith("85")
    prune_layer(w, layer=3, n=768)            # the whole last FFN layer
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    it = w.compare_result["items"][0]
    assert it["base_text"] == baseline and it["changed"] and not it["edit_text"].startswith("85")
    w.edits_panel.undo()
    run_and_wait(qtbot, w)
    assert w.last_outputs["outputs"][0] == baseline
    w.edits_panel.redo()
    w.export_model(str(tmp_path / "exported"))
    qtbot.waitUntil(lambda: w.export_result is not None, timeout=WAIT)
    assert w.export_result["baked"] and w.export_result["check"]["same_output"]
    assert not w.export_result["sidecar"]
    # plain transformers, no neurolens: the exported checkpoint gives the edited answer
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = str(tmp_path / "exported")
    hf, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tok("Compute: 47+38=", return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=4, do_sample=False)
    plain = tok.decode(out[0, ids.shape[1]:])
    assert plain == it["edit_text"] and not plain.startswith("85")


@pytest.mark.slow
@needs_demo
def test_demo_model_session_reopens_to_the_same_edited_output(qtbot, window, tmp_path):
    """Save a session on the demo model with a prune edit; a fresh window opens it, reloads the
    model and gives the same edited answer."""
    from neurolens.gui.main_window import MainWindow
    from neurolens.resources import model_path
    w = window
    load(qtbot, w, str(model_path()))
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(4)
    prune_layer(w, layer=3, n=768)
    run_and_wait(qtbot, w)
    edited = w.last_outputs["outputs"][0]
    assert not edited.startswith("85")           # the edit is in effect (baseline answers 85)
    path = tmp_path / "demo.neurolens.json"
    w.save_session(str(path))
    settings = QSettings(str(tmp_path / "settings2.ini"), QSettings.Format.IniFormat)
    w2 = MainWindow(settings=settings, autosave_path=str(tmp_path / "other-autosave.json"))
    qtbot.addWidget(w2)
    w2.show()
    assert w2.open_session(str(path))
    qtbot.waitUntil(lambda: w2.model_info is not None, timeout=WAIT)
    assert w2.prompt_edit.toPlainText() == "Compute: 47+38=" and w2.max_tokens.value() == 4
    run_and_wait(qtbot, w2)
    assert w2.last_outputs["outputs"][0] == edited
    w2.close()


@pytest.mark.slow
@needs_demo
def test_demo_model_autosave_restores_after_a_kill(qtbot, tmp_path, monkeypatch):
    """On the demo model: prompt, prompt set, neuron set and a prune edit; the autosave fires
    while the user keeps working, the process "dies" (no close), and a fresh window started
    afterwards offers the restore, reloads the model and gives the same edited answer."""
    from PySide6.QtWidgets import QMessageBox

    from neurolens.gui.main_window import MainWindow
    from neurolens.resources import model_path
    auto = tmp_path / "autosave.neurolens.json"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, autosave_path=str(auto))
    qtbot.addWidget(w)
    w.autosave_timer.setInterval(300)
    w.show()
    load(qtbot, w, str(model_path()))
    w.add_prompts(["Compute: 12+30=", "Compute: 21+54="], "forget")
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(4)
    prune_layer(w, layer=3, n=768)
    w.save_selection_as_set("last layer")
    # changes keep coming (their timing is test_autosave_comes_during_a_steady_stream_...)
    for i in range(6):
        w.add_prompts([f"Compute: {i}+1="], "retain")
    w.run_list.setChecked(False)          # run the typed prompt, not the list
    qtbot.waitUntil(lambda: auto.is_file() and not w._dirty, timeout=WAIT)
    run_and_wait(qtbot, w)
    edited = w.last_outputs["outputs"][0]
    assert not edited.startswith("85")
    w.autosave_timer.stop()           # the process is killed here: no closeEvent
    w.worker.cancel_token.cancel()
    w.thread.quit()
    assert w.thread.wait(WAIT)

    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    fresh = MainWindow(settings=QSettings(str(tmp_path / "s2.ini"), QSettings.Format.IniFormat),
                       autosave_path=str(auto))
    qtbot.addWidget(fresh)
    fresh.show()
    fresh.offer_restore()
    qtbot.waitUntil(lambda: fresh.model_info is not None, timeout=WAIT)
    assert [s for s, _ in fresh.prompts].count("retain") == 6
    assert ("forget", "Compute: 12+30=") in fresh.prompts
    assert len(fresh.neuron_sets["last layer"]) == 768
    assert [o.op for o in fresh.edit_model.ops] == ["prune"]
    assert fresh.prompt_edit.toPlainText() == "Compute: 47+38=" and fresh.max_tokens.value() == 4
    run_and_wait(qtbot, fresh)
    assert fresh.last_outputs["outputs"][0] == edited
    fresh.close()
    assert not auto.exists()


def test_garbage_is_collected_on_the_gui_thread(qtbot, window):
    """Automatic collection is off (a worker thread must never destroy Qt objects); the GUI
    thread's timer collects cycles instead, once the interpreter's threshold is passed."""
    import gc
    import threading
    import weakref
    from neurolens.gui import gc_policy
    assert not gc.isenabled() and gc_policy._policy is not None
    seen = []

    class Node:
        def __del__(self):
            seen.append(threading.current_thread() is threading.main_thread())

    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    # pass the generation-0 threshold (kept alive: freeing them would lower the count again),
    # on every poll: objects an earlier test's window frees meanwhile lower the count too
    junk: list = []

    def collected():
        junk.extend([] for _ in range(gc.get_threshold()[0] * 2))
        return ref() is None
    qtbot.waitUntil(collected, timeout=WAIT)
    assert seen == [True, True] and len(junk)


def test_closing_the_last_window_gives_the_interpreter_its_gc_back(qtbot, tmp_path, tiny_dirs,
                                                                   monkeypatch):
    """The GUI's collection policy (automatic collection off, a loaded model's objects frozen)
    lasts while a window is open: once the last one has closed, and only after its worker
    thread has finished, collection is on again with the thresholds it had and nothing frozen,
    and a window opened later installs the policy afresh. (Without this, every test after the
    GUI tests ran with automatic collection off.)"""
    import gc
    from neurolens.gui import gc_policy
    from neurolens.gui.main_window import MainWindow
    original = gc.get_threshold()
    assert gc.isenabled() and gc.get_freeze_count() == 0      # as the earlier windows left it
    windows, at_restore = [], []
    real_restore = gc_policy.GuiThreadCollector.restore

    def restore(self):
        at_restore.append([w.thread.isFinished() for w in windows])
        real_restore(self)

    monkeypatch.setattr(gc_policy.GuiThreadCollector, "restore", restore)

    def new_window(name):
        w = MainWindow(autosave_path=str(tmp_path / f"{name}.neurolens.json"))
        qtbot.addWidget(w)
        windows.append(w)
        return w

    custom = (977, 13, 11)
    gc.set_threshold(*custom)
    try:
        a, b = new_window("a"), new_window("b")
        assert not gc.isenabled() and gc_policy._policy is not None
        load(qtbot, a, str(tiny_dirs["gpt2"]))          # a loaded model freezes what is alive
        assert gc.get_freeze_count() > 0
        a.close()
        assert a.thread.isFinished() and not gc.isenabled()       # b is still open
        b.close()
        assert at_restore == [[True, True]]                       # after both workers ended
        assert gc.isenabled() and gc.get_freeze_count() == 0 and gc.get_threshold() == custom
        assert gc_policy._policy is None
        c = new_window("c")
        assert not gc.isenabled() and gc_policy._policy is not None
        c.close()
        assert at_restore[-1] == [True, True, True]
        assert gc.isenabled() and gc.get_freeze_count() == 0 and gc.get_threshold() == custom
        a.close()                                                 # closing twice changes nothing
        assert gc.isenabled() and gc_policy._policy is None
    finally:
        gc.set_threshold(*original)


def test_gc_policy_waits_for_a_busy_worker_before_giving_collection_back(qtbot):
    """A window whose worker thread had not finished when it closed: collection stays off until
    the thread reports idle (checked on the GUI-thread timer), then comes back."""
    import gc

    from PySide6.QtWidgets import QApplication

    from neurolens.gui import gc_policy
    assert gc.isenabled()
    holder, busy = QApplication.instance(), [True]
    pol = gc_policy.acquire(QApplication.instance(), holder)
    try:
        assert not gc.isenabled()
        gc_policy.release(holder, lambda: not busy[0])
        pol.check()
        assert not gc.isenabled() and gc_policy._policy is pol
        busy[0] = False
        qtbot.waitUntil(gc.isenabled, timeout=WAIT)
        assert gc_policy._policy is None and gc.get_freeze_count() == 0
    finally:
        busy[0] = False
        if gc_policy._policy is pol:
            gc_policy._uninstall(pol)


@pytest.mark.slow
@needs_demo
def test_demo_model_default_load_run_click_and_cancel(qtbot, window):
    """The start-up path on the shipped demo model: the default model loads in the background,
    a prompt runs, both heatmaps hold data, a clicked neuron fills the inspector and its logit
    lens, and a long run over a prompt list cancels and leaves the app usable."""
    w = window
    w.model_info = None
    w.open_model(None)                       # what `neurolens` with no arguments does
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT)
    assert w.model_info["n_layers"] == 4 and "demo-lm" in w.model_info["name"]
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.max_tokens.setValue(4)
    run_and_wait(qtbot, w)
    assert w.last_outputs["outputs"][0].startswith("85")
    assert w.layer_map.data.shape == (4, 768)
    np.testing.assert_allclose(w.layer_map.data[3], w.store.stats("blocks.3.mlp.hook_post").mean,
                               rtol=1e-5)
    qtbot.waitUntil(lambda: w.token_map.has_data(), timeout=WAIT)
    w.layer_map.click_cell(3, 654)
    assert w.selection == [("blocks.3.mlp.hook_post", 654)]
    assert "L3.N654" in w.inspector.title.text()
    qtbot.waitUntil(lambda: w.inspector.lens.rowCount() == 10, timeout=WAIT)
    w.add_prompts([f"Compute: {10 + i}+{20 + i}=" for i in range(16)], "long")
    w.max_tokens.setValue(200)
    w.stop_eos.setChecked(False)
    w.run()
    qtbot.waitUntil(lambda: w.progress_bar.maximum() > 0 and 3 < w.progress_bar.value()
                    < w.progress_bar.maximum(), timeout=WAIT)
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=WAIT)
    assert w.status.text() == "cancelled" and w.last_outputs is None
    w.run_list.setChecked(False)
    w.max_tokens.setValue(4)
    run_and_wait(qtbot, w)
    assert w.last_outputs["outputs"][0].startswith("85")


def test_colour_levels_follow_the_active_values_of_a_sparse_layer(window):
    """In a ReLU layer most activations are exactly 0; the heatmap's colour scale comes from the
    non-zero ones (a percentile over everything would be 0 and saturate every active cell)."""
    rng = np.random.default_rng(0)
    sparse = np.zeros((40, 768))
    idx = rng.choice(sparse.size, 60, replace=False)
    sparse.flat[idx] = rng.uniform(1.0, 3.0, 60)          # 0.2% active
    lo, hi = window.maps.levels("sparse", sparse)
    assert lo == -hi and 2.5 < hi <= 3.0
    dense = rng.normal(0, 1, (40, 768))
    lo, hi = window.maps.levels("dense", dense)
    assert 2.5 < hi < 3.2                                 # about the 99.5th |N(0,1)| percentile
    assert window.maps.levels("empty", np.zeros((3, 4))) == (-1.0, 1.0)


@pytest.mark.slow
@needs_demo
def test_compare_scores_the_code_set_on_whole_program_bodies(qtbot, window):
    """The shipped code set's answers are program bodies of several lines: Compare scores the
    generation up to its blank line, so the demo model's programs count as right."""
    from neurolens.resources import model_path
    w = window
    load(qtbot, w, str(model_path()))
    w.load_shipped_set("code", 6)
    w.load_shipped_set("arithmetic", 2)
    w.max_tokens.setValue(48)
    prune_layer(w, layer=0, n=1)
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=LONG)
    (m,) = [m for m in w.compare_result["metrics"] if m["set"] == "code"]
    assert m["n"] == 6 and m["before"] >= 5 / 6
    items = w.compare_result["items"]
    # each row stops where its answer ends ("stop at the end of each set answer", on by default)
    assert all(it["base_text"].endswith("\n    return result\n\n") for it in items[:5])
    assert all(it["base_text"].count("\n") == 1 and it["base_text"].endswith("\n")
               for it in items[6:])
    w.stop_answer.setChecked(False)
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None and w.compare_result["items"][6][
        "base_text"].count("\n") > 1, timeout=LONG)
