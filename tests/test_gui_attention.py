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
        if key == "attribution":                # its own test below
            continue
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


def test_attention_grid_attribution_per_head(qtbot, window, tiny_dirs):  # noqa: F811
    """The grid's attribution entry: the Attribute form's answer, contrast and corruption
    scored per query head on the worker; exact patching equals plain torch (the head's d_head
    slice of o_proj's input zeroed or patched from the corrupted run, the logit difference
    measured), attribution patching equals hand-written autograd at o_proj's input; a click
    opens the head."""
    import torch
    from test_attribution_heads import CLEAN, CORRUPT, O_PROJ, cols, hf_tok, plain_ld, z_in
    w = window
    w.open_model(str(tiny_dirs["llama"]))          # grouped-query: 2 query heads, 1 kv head
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT)
    w.prompt_edit.setPlainText(CLEAN)
    p = w.attribute_panel
    w.right_tabs.setCurrentWidget(p)
    p.answer.setText("42")
    p.contrast.setText("52")
    w.center_tabs.setCurrentWidget(w.attention_view)
    v = w.attention_view
    v.metric.setCurrentIndex(v.metric.findData("attribution"))
    assert v.compute_btn.text() == "Attribute heads" and not v.grid.has_data()
    hf = w.worker.lm.hf
    ids, cids = (w.worker.lm.tokenizer(t)["input_ids"] for t in (CLEAN, CORRUPT))
    base = plain_ld(hf, ids)
    paths = [O_PROJ["llama"].format(l=layer) for layer in range(2)]
    for corruption, corrupt in (("corrupted prompt below", CORRUPT), ("zero ablation", "")):
        p.corruption.setCurrentText(corruption)
        p.corrupt_text.setText(corrupt)
        v.attr_method.setCurrentIndex(v.attr_method.findData("exact"))
        v.compute_btn.click()
        idle(qtbot, w)
        assert not w.errors and v.grid.has_data() and v.grid.data.shape == (2, 2)
        want = np.zeros((2, 2))
        for layer, path in enumerate(paths):
            zc = z_in(hf, "llama", cids, layer) if corrupt else None
            for h in range(2):
                def patch(x, h=h, zc=zc):
                    x[0, :, cols(h)] = 0.0 if zc is None else zc[:, cols(h)]
                    return x
                want[layer, h] = base - plain_ld(hf, ids, [(path, patch)])
        np.testing.assert_allclose(v.grid.data, want, atol=1e-5, err_msg=corruption)
        assert np.abs(want).max() > 1e-3                      # the heads matter
        lo, hi = v.grid.bar.levels()
        assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(want).max(), rel=1e-5)
    # attribution patching (zero ablation): sum over tokens and the head's slice of
    # z * d metric / d z at o_proj's input, by hand
    v.attr_method.setCurrentIndex(v.attr_method.findData("attribution"))
    v.compute_btn.click()
    idle(qtbot, w)
    leaves = {}

    def keep(layer):
        def hook(mod, a):
            x = a[0] + 0.0 if a[0].requires_grad else a[0].detach().clone().requires_grad_()
            leaves[layer] = x
            return (x,) + tuple(a[1:])
        return hook
    hs = [hf.get_submodule(path).register_forward_pre_hook(keep(i))
          for i, path in enumerate(paths)]
    t = hf_tok()
    try:
        with torch.enable_grad():
            lg = hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            grads = torch.autograd.grad(lg[t("4")] - lg[t("5")], [leaves[0], leaves[1]])
    finally:
        for h in hs:
            h.remove()
    want = np.array([[float((leaves[i].detach()[0] * grads[i][0])[:, cols(h)].sum())
                      for h in range(2)] for i in range(2)])
    np.testing.assert_allclose(v.grid.data, want, atol=1e-5)
    assert "(attribution patching, zero ablation)" in v.info.text()
    # no set difference for one answer's effects; a click opens the head's pattern
    v.stat.setCurrentIndex(1)
    assert not v.grid.has_data() and "no set difference" in v.grid.hint.toPlainText()
    v.stat.setCurrentIndex(0)
    v.grid.click_cell(0, 1)
    idle(qtbot, w)
    assert w.attention.head == (0, 1) and w.attention.selected == [(0, 1)]
    qtbot.waitUntil(lambda: v.pattern.has_data(), timeout=WAIT)
    assert v.pattern.data.shape == (len(ids), len(ids))
    assert v.pattern.plot.titleLabel.text.startswith("L0.H1 pattern")
