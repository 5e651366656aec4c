"""The Attention tab, offscreen, driven like a user would (pytest-qt): the layer x head grid
against the engine's head summaries, a clicked head's pattern against the model's own pattern
capture, the set difference, and heads pruned through the edit list."""

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from test_gui import WAIT, window  # noqa: F401 - the window fixture (scratch settings, autosave)

pytestmark = pytest.mark.gui

def idle(qtbot, w):
    qtbot.waitUntil(lambda: not w.attention.busy, timeout=WAIT)


def test_attention_tab_grid_pattern_difference_and_prune(qtbot, window, tiny_dirs):  # noqa: F811
    from neurolens.engine.attention import EAGER_NOTE
    from neurolens.engine.head_summary import head_summary
    w = window
    w.open_model(str(tiny_dirs["llama"]))          # grouped-query: 2 query heads, 1 kv head
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT)
    assert w.center_tabs.isTabVisible(w.center_tabs.indexOf(w.attention_view))
    w.prompt_edit.setPlainText("Compute: 47+38=")
    w.add_prompts(["hello world", "a b a b a b"], "other")
    w.center_tabs.setCurrentWidget(w.attention_view)
    v = w.attention_view
    v.induction_len.setValue(8)
    v.compute_btn.click()
    assert w.status.text().endswith(f"({EAGER_NOTE})")
    idle(qtbot, w)
    s = w.attention.summary
    assert s is not None and s.prompts == ["Compute: 47+38=", "hello world", "a b a b a b"]
    # the reference: the engine's summaries of the same prompts, on the worker's model
    ref = head_summary(w.worker.lm, s.prompts, ["typed", "other", "other"], induction_len=8)
    for k in range(v.metric.count()):
        v.metric.setCurrentIndex(k)
        key = v.metric.currentData()
        assert v.grid.has_data() and v.grid.data.shape == (2, 2)
        np.testing.assert_allclose(v.grid.data, ref.mean(key), rtol=1e-5, err_msg=key)
    assert len(v.grid.texts) == 4         # each cell's value is written in it
    # set difference A - B, per head
    v.metric.setCurrentIndex(v.metric.findData("prev"))
    v.stat.setCurrentIndex(1)
    v.set_a.setCurrentText("typed")
    v.set_b.setCurrentText("other")
    np.testing.assert_allclose(v.grid.data, ref.diff("prev", "typed", "other"), rtol=1e-5)
    v.metric.setCurrentIndex(v.metric.findData("induction"))
    assert not v.grid.has_data() and "no set difference" in v.grid.hint.toPlainText()
    v.stat.setCurrentIndex(0)
    # the showcase head opened by itself; click another: its pattern for the chosen prompt
    qtbot.waitUntil(lambda: v.pattern.has_data(), timeout=WAIT)
    v.grid.click_cell(1, 1)
    idle(qtbot, w)
    m = w.worker.lm
    for i in (0, 2):
        v.prompt.setCurrentIndex(i)
        idle(qtbot, w)
        cap = m.attention([s.prompts[i]], "blocks.1.attn.hook_pattern")
        want = cap["blocks.1.attn.hook_pattern"][0][1]
        np.testing.assert_allclose(v.pattern.data, want, atol=1e-7)
        assert v.pattern.labels == [t.replace(" ", "·") for t in cap.tokens[0]]
        assert v.pattern.key_axis.labels == v.pattern.labels
        z = m.capture([s.prompts[i]], "blocks.1.attn.hook_z")["blocks.1.attn.hook_z"][0]
        np.testing.assert_allclose(v.pattern.norm_values,
                                   np.linalg.norm(z.reshape(len(z), 2, -1)[:, 1], axis=-1),
                                   rtol=1e-5)
    # hovering a cell names its query and key tokens and the weight
    vb = v.pattern.plot.vb
    v.pattern._on_move(vb.mapViewToScene(QPointF(1.5, 4.5)))
    assert v.pattern.hover_text() == (f"query 4 “{v.pattern.labels[4]}” → key 1 "
                                      f"“{v.pattern.labels[1]}”: weight {want[4, 1]:.3f}")
    # select both heads of layer 1 and prune them: one edit; recomputed, their outputs are 0
    v.grid.click_cell(1, 0, additive=True)
    assert w.attention.selected == [(1, 1), (1, 0)]
    v.prune_btn.click()
    op = w.edit_model.ops[-1]
    assert (op.op, op.site, op.heads) == ("prune_head", "blocks.1.attn.hook_z", [0, 1])
    v.compute_btn.click()
    idle(qtbot, w)
    v.metric.setCurrentIndex(v.metric.findData("out_norm"))
    assert np.all(v.grid.data[1] == 0) and np.all(v.grid.data[0] > 0)
    assert "with 1 edit" in v.info.text()
    # compare with the pruned heads: the edit changes the generated text (layer 1 loses its
    # whole attention output) and the Compare view opens
    w.compare_result = None
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    r = w.compare_result
    assert r["n_edits"] == 1 and any(it["changed"] for it in r["items"])
    assert w.center_tabs.currentWidget() is w.compare_view
