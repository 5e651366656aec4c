"""The Methods panel reads the method registry: a method registered by its own module (the toy
``clamp-top`` of test_method_registry, unchanged) shows in the panel with the inputs of its
params dataclass and the set pickers of its roles, and fits from there."""

import numpy as np
import pytest

from test_gui import WAIT, load, window  # noqa: F401 - the window fixture
from test_method_registry import toy  # noqa: F401 - registers (and afterwards removes) clamp-top

pytestmark = pytest.mark.gui

PROBE = ["the cat sat on the mat", "hello world, hello", "ab ab ab ab", "Compute: 12+30="]


def plain_top_neurons(folder, prompts, layer: int, k: int) -> list[int]:
    """The k neurons of ``blocks.{layer}.mlp.hook_post`` with the largest |mean| over every
    token of ``prompts``: plain transformers, a hook on the tiny Llama's down projection input,
    one prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    rows = []
    handle = hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda module, args: rows.append(args[0][0].double().numpy().copy()))
    try:
        with torch.no_grad():
            for p in prompts:
                hf(torch.tensor([tok(p)["input_ids"]]))
    finally:
        handle.remove()
    mean = np.concatenate(rows).mean(0)
    return sorted(np.argsort(-np.abs(mean))[:k].tolist())


def test_a_registered_method_appears_in_the_panel_and_fits(qtbot, toy, window,  # noqa: F811
                                                           tiny_dirs):
    from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    panel = w.methods_panel
    titles = [panel.method.itemText(i) for i in range(panel.method.count())]
    # the language-model methods, the toy one among them (in registration order)
    assert sorted(titles) == ["Clamp the top neurons", "Key Space Detection", "NeuroStrike",
                              "Neuron Adjust", "Statistical top-k"]
    panel.method.setCurrentText("Clamp the top neurons")
    form = panel.form()
    assert form.spec is toy and panel.stack.currentWidget() is form
    # its inputs: the fields of ClampParams with their types and defaults; one set picker
    assert list(form.inputs) == ["k", "limit", "layer"] and list(form.roles) == ["probe"]
    assert isinstance(form.inputs["k"], QSpinBox) and form.inputs["k"].value() == 2
    assert isinstance(form.inputs["limit"], QDoubleSpinBox) and form.inputs["limit"].value() == 0
    assert isinstance(form.inputs["layer"], QSpinBox) and form.inputs["layer"].value() == 0
    assert form.inputs["k"].toolTip() == "how many neurons to clamp" and form.answers is None
    w.add_prompts(PROBE, "probe prompts")
    w.add_prompts(["something else"], "other")
    assert [form.roles["probe"].itemText(i) for i in range(form.roles["probe"].count())] == [
        "probe prompts", "other"]
    assert form.roles["probe"].currentText() == "probe prompts"
    form.inputs["k"].setValue(3)
    form.inputs["layer"].setValue(1)
    assert panel.params() == ("Clamp the top neurons", {"probe": "probe prompts", "k": 3,
                                                        "limit": 0.0, "layer": 1})
    sent = []
    w.methods.fitSubmitted.connect(lambda method, params, sets: sent.append(sets))
    panel.fit_btn.click()
    qtbot.waitUntil(lambda: w.method_result is not None, timeout=WAIT)
    assert sent[0]["probe"] == PROBE and not w.errors
    # the edit the method made: the top neurons of its probe set, found by plain transformers
    want = plain_top_neurons(tiny_dirs["llama"], PROBE, layer=1, k=3)
    site = "blocks.1.mlp.hook_post"
    (op,) = w.edit_model.ops
    assert (op.op, op.site, op.neurons, op.limit) == ("clamp", site, want, 0.0)
    assert w.selection == [(site, j) for j in want]
    assert w.method_result["text"] == f"clamp-top: 3 neurons at {site}"
    assert "→ 1 edit(s) added" in panel.report.text()
    assert "clamp" in w.edits_panel.list.item(0).text()
