"""The Attribute panel and the neuron dashboard, driven in the real window (pytest-qt), checked
against plain torch on a tiny Llama (module paths written out by hand) and against the engine."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import needs_demo
from test_gui import WAIT, load, window  # noqa: F401 - the window fixture

pytestmark = pytest.mark.gui

PROMPT, CORRUPT = "Compute: 47+38=", "Compute: 47+28="
DOWN = "model.layers.{l}.mlp.down_proj"       # hook_post = the input of down_proj (Llama)


def _hf(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return m, AutoTokenizer.from_pretrained(str(folder))


def _metric(logits, tok, answer, contrast):
    """logit(answer) - logit(contrast) at the last position (one-token answers)."""
    a, = tok(answer, add_special_tokens=False)["input_ids"]
    c, = tok(contrast, add_special_tokens=False)["input_ids"]
    return logits[0, -1, a] - logits[0, -1, c]


def plain_gradxact(folder, prompt, answer, contrast, layer, neuron) -> float:
    """a . d metric / d a for one hook_post neuron, summed over positions: plain torch hooks."""
    m, tok = _hf(folder)
    got = {}

    def pre(_mod, args):
        args[0].retain_grad()
        got["x"] = args[0]
    h = m.get_submodule(DOWN.format(l=layer)).register_forward_pre_hook(pre)
    try:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        _metric(m(input_ids=ids).logits, tok, answer, contrast).backward()
    finally:
        h.remove()
    x = got["x"]
    return float((x[0, :, neuron] * x.grad[0, :, neuron]).sum().detach())


def plain_zero_patch(folder, prompt, answer, contrast, layer, neuron) -> float:
    """metric(clean) - metric(clean with that neuron's activation set to 0 at every position)."""
    m, tok = _hf(folder)
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        clean = _metric(m(input_ids=ids).logits, tok, answer, contrast)

        def pre(_mod, args):
            x = args[0].clone()
            x[..., neuron] = 0.0
            return (x,)
        h = m.get_submodule(DOWN.format(l=layer)).register_forward_pre_hook(pre)
        try:
            patched = _metric(m(input_ids=ids).logits, tok, answer, contrast)
        finally:
            h.remove()
    return float(clean - patched)


def fill(w, answer="8", contrast="7", corruption="zero ablation", corrupt="",
         method="gradient × activation", k=5):
    p = w.attribute_panel
    w.right_tabs.setCurrentWidget(p)          # refreshes the choices
    p.answer.setText(answer)
    p.contrast.setText(contrast)
    p.corruption.setCurrentText(corruption)
    p.corrupt_text.setText(corrupt)
    p.method.setCurrentText(method)
    p.top_k.setValue(k)


def attribute_and_wait(qtbot, w):
    w.attribute_panel.run_btn.click()
    qtbot.waitUntil(lambda: not w.attribution.busy, timeout=WAIT)


def test_attribute_panel_on_tiny_llama(qtbot, window, tiny_dirs):  # noqa: F811
    from neurolens.engine.attribution import attribute
    from neurolens.spec.edits import Prune
    w = window
    folder = tiny_dirs["llama"]
    load(qtbot, w, str(folder))
    w.prompt_edit.setPlainText(PROMPT)
    fill(w)
    attribute_and_wait(qtbot, w)
    assert not w.errors
    view = w.attribution.view
    assert len(view.rows) == 5 and w.attribute_results.table.rowCount() == 5
    assert w.attribute_results.layer_map.data.shape == (2, 64)
    assert w.center_tabs.currentWidget() is w.attribute_results
    # the top row against the engine, called directly on the same model
    ref = attribute(w.worker.lm, PROMPT, "8", "7", ablate="zero", method="gradxact")
    (s0, n0, e0), = ref.top(1)
    top = view.rows[0]
    assert (top.site, top.neuron) == (s0, n0)
    assert top.effect == pytest.approx(e0, rel=1e-9)
    assert [(r.site, r.neuron) for r in view.rows] == [(s, n) for s, n, _ in ref.top(5)]
    # ... and against plain torch: a . dm/da at down_proj's input, a hard-coded module path
    layer = int(top.site.split(".")[1])
    want = plain_gradxact(folder, PROMPT, "8", "7", layer, top.neuron)
    assert top.effect == pytest.approx(want, rel=1e-4, abs=1e-6)
    # the map's cell is the same number; the token map shows the top row's layer per token
    np.testing.assert_allclose(w.attribute_results.layer_map.data[layer, top.neuron],
                               top.effect, rtol=1e-5)
    tok_rows = w.attribute_results.token_map.data
    assert tok_rows.shape == (len(PROMPT), 64)
    assert tok_rows[:, top.neuron].sum() == pytest.approx(top.effect, rel=1e-4)

    # a table row opens the neuron in the inspector, with its effect
    w.attribute_results.click_row(1)
    second = view.rows[1]
    assert w.selection == [(second.site, second.neuron)]
    assert w.right_tabs.currentIndex() == 0
    title = w.inspector.title.text()
    assert second.label in title and f"{second.effect:+.4f}" in title
    # a cell of the effect map does too
    w.attribute_results.layer_map.click_cell(layer, top.neuron)
    assert w.selection == [(top.site, top.neuron)]
    # no index for this model: the dashboard says how to build one
    qtbot.waitUntil(lambda: w.dashboard.state == "missing", timeout=WAIT)
    assert "neurolens index build" in w.dashboard.header.text()

    # verify exactly: exact patching of the top 5 equals a hand-made hook zeroing the neuron
    w.attribute_panel.verify_btn.click()
    qtbot.waitUntil(lambda: not w.attribution.busy, timeout=WAIT)
    assert all(r.exact is not None for r in view.rows)
    for r in view.rows[:2]:
        want = plain_zero_patch(folder, PROMPT, "8", "7", int(r.site.split(".")[1]), r.neuron)
        assert r.exact == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert w.attribute_results.table.item(0, 3).text() == f"{view.rows[0].exact:+.4f}"

    # prune the top K: one prune op per site with exactly the top neurons
    w.attribute_panel.prune_btn.click()
    ops = w.edit_model.ops
    assert all(isinstance(o, Prune) for o in ops)
    got = {(o.site, n) for o in ops for n in o.neurons}
    assert got == {(s, n) for s, n, _ in ref.top(5)}
    assert len(ops) == len({s for s, _, _ in ref.top(5)})
    # top K -> a neuron set
    assert w.attribution.select_top() == "top 5 attribution"
    assert set(w.selection) == got


def test_attribute_bad_input_says_one_line(qtbot, window, tiny_dirs):  # noqa: F811
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    w.prompt_edit.setPlainText(PROMPT)
    fill(w, corruption="corrupted prompt below", corrupt="Compute: 47+280=",
         method="attribution patching")
    attribute_and_wait(qtbot, w)
    assert w.attribution.result is None
    assert "differ" in w.errors[-1] and "ablat" in w.errors[-1]
    assert w.attribute_panel.run_btn.isEnabled()
    # a corrupted prompt of the same length: attribution patching runs
    fill(w, corruption="corrupted prompt below", corrupt=CORRUPT, method="attribution patching")
    attribute_and_wait(qtbot, w)
    assert w.attribution.result is not None and w.attribution.result.corruption == "prompts"


class _FakeIndex:
    """An index with the contract's fields (neurolens.engine.neuron_index)."""

    def __init__(self, site):
        from neurolens.engine.neuron_index import Dashboard, Example
        self.folder, self.sites = "/fake/index", [site]
        self.board = Dashboard(
            site=site, neuron=3, density=0.125, threshold=0.0,
            hist_edges=np.array([-1.0, 0.0, 1.0, 2.0, 2.5]), hist_counts=np.array([0, 70, 8, 2]),
            n_tokens=80, mean=0.3, max=2.5,
            top=[Example(doc=4, pos=2, value=2.5, tokens=["The", " cat", " sat", " on"], focus=2,
                         acts=[0.0, 0.5, 2.5, 0.1]),
                 Example(doc=9, pos=0, value=1.25, tokens=["Dogs", " run"], focus=0)])
        self.asked = []

    def dashboard(self, site, neuron, k=20, model=None, context=None):
        self.asked.append((site, neuron))
        return self.board


def test_dashboard_shows_the_index_examples(qtbot, window, tiny_dirs, monkeypatch):  # noqa: F811
    from neurolens.gui import jobs_attribute
    from neurolens.gui.presenters.attribute import dashboard_html
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    site = "blocks.1.mlp.hook_post"
    fake = _FakeIndex(site)
    monkeypatch.setattr(jobs_attribute, "_index_for", lambda model: fake)
    w.inspect(site, 3)
    qtbot.waitUntil(lambda: w.dashboard.state == "shown", timeout=WAIT)
    assert fake.asked == [(site, 3)]
    assert w.inspector.lower.currentWidget() is w.dashboard    # brought forward
    lines = w.dashboard.example_texts()
    assert lines == ["2.500", "The cat sat on", "1.250", "Dogs run"]
    assert "12.5% of 80 tokens" in w.dashboard.header.text()
    # the max token is boxed and bold; the context is shaded where the neuron is active
    spans = re.findall(r'<span style="([^"]*)">([^<]*)</span>', dashboard_html(fake.board))
    assert [t for st, t in spans if "bold" in st] == ["&nbsp;sat", "Dogs"]
    assert [t for st, t in spans if "background" in st] == ["&nbsp;cat", "&nbsp;sat", "&nbsp;on",
                                                            "Dogs"]
    # a site the index does not cover: one line, no examples
    w.inspect("blocks.0.mlp.hook_pre", 3)
    qtbot.waitUntil(lambda: w.dashboard.state == "error", timeout=WAIT)
    assert "not blocks.0.mlp.hook_pre" in w.dashboard.header.text()
    assert w.dashboard.examples.isHidden()


@pytest.mark.slow
@needs_demo
def test_dashboard_of_the_demo_index(qtbot, window):  # noqa: F811
    from neurolens.engine.neuron_index import NeuronIndex, find_index
    w = window
    load(qtbot, w, "")
    site = "blocks.3.mlp.hook_post"
    w.inspect(site, 164)
    qtbot.waitUntil(lambda: w.dashboard.state == "shown", timeout=WAIT)
    idx = NeuronIndex.open(find_index(w.worker.lm))
    ref = idx.dashboard(site, 164, k=12)
    shown = w.dashboard.dashboard
    assert [(e.doc, e.pos) for e in shown.top] == [(e.doc, e.pos) for e in ref.top]
    assert w.dashboard.example_texts()[0] == f"{ref.top[0].value:.3f}"
    assert shown.top[0].tokens[shown.top[0].focus] == ref.top[0].tokens[ref.top[0].focus]


@pytest.mark.slow
@needs_demo
def test_demo_set_attribution_and_cancel(qtbot, window):  # noqa: F811
    from neurolens.engine.attribution import attribute
    w = window
    load(qtbot, w, "")
    w.load_shipped_set("arithmetic", 4)
    prompts = [p for _, p in w.prompts]
    # a prompt set: the answers are the set's own, one per prompt; mean ablation over the set
    fill(w, answer="", contrast="", corruption="mean ablation", method="attribution patching")
    w.attribute_panel.clean.setCurrentText("set: arithmetic")
    assert w.attribute_panel.answer.text() == ""        # answers differ: each prompt's own
    attribute_and_wait(qtbot, w)
    assert not w.errors
    ref = attribute(w.worker.lm, prompts, [w.prompt_answers[p] for p in prompts], ablate="mean")
    top = w.attribution.view.rows[0]
    got = [(r.site, r.neuron, r.effect) for r in w.attribution.view.rows]
    assert got == [(s, n, pytest.approx(e, rel=1e-9)) for s, n, e in ref.top(5)]
    res = w.attribution.result
    assert res.metric == "logprob" and res.corruption == "mean"
    assert res.corrupted == pytest.approx(ref.corrupted, rel=1e-9)
    # exact patching of every neuron: progress, then cancel; the last result stays
    w.prompt_edit.setPlainText(PROMPT)
    fill(w, answer="85", contrast="75", corruption="corrupted prompt below", corrupt=CORRUPT,
         method="exact patching (every neuron)")
    w.attribute_panel.clean.setCurrentText("typed prompt")
    w.attribute_panel.run_btn.click()
    qtbot.waitUntil(lambda: w.progress_bar.maximum() == 4 * 768 and w.progress_bar.value() > 0,
                    timeout=WAIT)
    assert w.attribute_panel.cancel_btn.isEnabled() and not w.attribute_panel.run_btn.isEnabled()
    w.attribute_panel.cancel_btn.click()
    qtbot.waitUntil(lambda: not w.attribution.busy, timeout=WAIT)
    assert w.status.text() == "cancelled" and w.progress_bar.value() < 4 * 768
    assert w.attribution.view.rows[0] is top and w.attribute_panel.run_btn.isEnabled()


def plain_generate(folder, prompt, n, pruned: dict[int, list[int]] | None = None) -> str:
    """Greedy continuation by plain transformers; ``pruned``: {layer: neurons} zeroed at
    down_proj's input (every position) by a hand-made hook."""
    m, tok = _hf(folder)
    hooks = []
    for layer, neurons in (pruned or {}).items():
        def pre(_mod, args, neurons=neurons):
            x = args[0].clone()
            x[..., neurons] = 0.0
            return (x,)
        hooks.append(m.get_submodule(DOWN.format(l=layer)).register_forward_pre_hook(pre))
    try:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = m.generate(**ids, max_new_tokens=n, do_sample=False)
    finally:
        for h in hooks:
            h.remove()
    return tok.decode(out[0, ids["input_ids"].shape[1]:])


@pytest.mark.slow
@needs_demo
def test_demo_attribute_top_set_prune_compare(qtbot, window):  # noqa: F811
    """The full loop on the demo model: attribute 12+35=47 against 22+35=57, the top 30 as a
    neuron set, prune it in the edits panel, Compare: the answer changes; the baseline is plain
    transformers' greedy text and the edited one that of a hand-made hook zeroing the set."""
    from neurolens.resources import model_path
    from neurolens.spec.edits import Prune
    w = window
    load(qtbot, w, "")
    clean, corrupt, k = "Compute: 12+35=", "Compute: 22+35=", 30
    w.prompt_edit.setPlainText(clean)
    fill(w, answer="47", contrast="57", corruption="corrupted prompt below", corrupt=corrupt,
         method="attribution patching", k=k)
    w.attribute_panel.clean.setCurrentText("typed prompt")
    attribute_and_wait(qtbot, w)
    assert not w.errors and len(w.attribution.view.rows) == k
    top = {(r.site, r.neuron) for r in w.attribution.view.rows}
    w.attribute_panel.select_btn.click()                 # top K -> neuron set
    assert f"top {k} attribution" in w.neuron_sets and set(w.selection) == top
    w.right_tabs.setCurrentWidget(w.edits_panel)
    w.edits_panel.op.setCurrentText("prune")
    w.edits_panel.positions.setCurrentText("all")
    w.edits_panel.add_btn.click()
    ops = w.edit_model.ops
    assert all(isinstance(o, Prune) for o in ops)
    assert {(o.site, n) for o in ops for n in o.neurons} == top
    w.max_tokens.setValue(4)
    w.set_run_list(False)
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    assert w.center_tabs.currentWidget() is w.compare_view
    it, = w.compare_result["items"]
    folder = model_path()
    assert it["base_text"] == plain_generate(folder, clean, 4)
    assert it["base_text"].startswith("47")
    pruned: dict[int, list[int]] = {}
    for s, n in top:
        pruned.setdefault(int(s.split(".")[1]), []).append(n)
    assert it["edit_text"] == plain_generate(folder, clean, 4, pruned)
    assert not it["edit_text"].startswith("47") and it["changed"]
    shown = w.compare_view.texts.toPlainText()
    assert it["base_text"].split("\n")[0] in shown and it["edit_text"].split("\n")[0] in shown


def test_typed_prompt_mean_ablation_over_the_skills_probe_split(qtbot, window,  # noqa: F811
                                                                  tiny_dirs):
    """A typed arithmetic prompt's mean ablation averages over the arithmetic probe split (as
    the CLI does for a skill's file), not over whatever the prompt list holds."""
    import json

    from neurolens.engine.attribution import attribute
    from neurolens.resources import prompts_dir
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    w.load_shipped_set("comprehension", 4)            # other prompts in the list
    w.prompt_edit.setPlainText(PROMPT)
    fill(w, corruption="mean ablation", method="attribution patching")
    w.attribute_panel.clean.setCurrentText("typed prompt")
    attribute_and_wait(qtbot, w)
    assert not w.errors
    rows = [json.loads(ln) for ln in (prompts_dir() / "arithmetic.jsonl").read_text().splitlines()]
    probe = [r["prompt"] for r in rows if r["split"] == "probe"]
    assert "arithmetic skill's probe split (400 prompts)" in w.status.text()
    assert w.attribution.req.mean_prompts == probe          # "verify exactly" uses it too
    ref = attribute(w.worker.lm, PROMPT, "8", "7", ablate="mean", mean_prompts=probe,
                    method="attribution")
    got = [(r.site, r.neuron, r.effect) for r in w.attribution.view.rows]
    assert got == [(s, n, pytest.approx(e, rel=1e-6, abs=1e-9)) for s, n, e in ref.top(5)]
    assert w.attribution.result.corrupted == pytest.approx(ref.corrupted, rel=1e-6)
