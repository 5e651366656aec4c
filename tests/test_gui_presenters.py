"""The window's presenters, without Qt: what the views show, from stores filled with known arrays,
checked against numpy on those arrays (or numbers worked out by hand)."""

import subprocess
import sys

import numpy as np
import pytest

from neurolens.gui.presenters import results
from neurolens.gui.presenters.family import DiffusionFamily, LMFamily, family_for
from neurolens.gui.presenters.maps import BASELINE, DIFFERENCE, Levels, Maps, View
from neurolens.gui.presenters.methods import (ALL_OTHERS_KEY, form_fields, method_sets,
                                              role_choices, role_defaults, text_value)
from neurolens.gui.presenters.prompts import PromptList
from neurolens.methods import registry
from neurolens.store import CaptureStore

PRESENTERS = ("neurolens.gui.presenters.family", "neurolens.gui.presenters.maps",
              "neurolens.gui.presenters.methods", "neurolens.gui.presenters.prompts",
              "neurolens.gui.presenters.results", "neurolens.gui.jobs")


def test_presenters_and_jobs_import_no_qt():
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in PRESENTERS)
            + "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')]\n"
            + "assert not bad, bad\n"
            + "assert not any(m.startswith('neurolens.gui.') and m.rsplit('.', 1)[1] in "
              "('worker', 'main_window', 'views') for m in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


# -- a language model's run in a store -------------------------------------------------------------
LM_INFO = {"name": "/models/tiny", "kind": "lm", "model_type": "llama", "n_layers": 2,
           "n_params": 1_234_567, "sites": {f"blocks.{layer}.{k}": 6 for layer in range(2)
                                             for k in ("mlp.hook_pre", "mlp.hook_post",
                                                       "hook_resid_post")}}
SETS = ("forget", "forget", "retain")
PROMPTS = ("ab", "abc", "xy z")


@pytest.fixture
def lm_run():
    """Three prompts, two of them generated further, rows [tokens, 6] at both layers' hook_post
    (and their baseline, every value 1 lower)."""
    rng = np.random.default_rng(1)
    store, base = CaptureStore(), CaptureStore()
    rows = {}
    prompt_len = (2, 3, 4)
    total = (4, 3, 5)                      # prompt + generated tokens
    for st, shift in ((store, 0.0), (base, -1.0)):
        for i, (p, s) in enumerate(zip(PROMPTS, SETS)):
            st.set_prompt(i, p, s)
            st.add_tokens(i, [f"p{i}{k}" for k in range(prompt_len[i])], prompt=True)
            st.add_tokens(i, [f"g{i}{k}" for k in range(total[i] - prompt_len[i])])
            for layer in range(2):
                site = f"blocks.{layer}.mlp.hook_post"
                if shift == 0.0:
                    rows[site, i] = rng.normal(size=(total[i], 6)).astype(np.float32)
                # prompt rows, then generated rows one by one (as a run appends them)
                r = rows[site, i] + np.float32(shift)
                st.append(site, i, r[:prompt_len[i]])
                for k in range(prompt_len[i], total[i]):
                    st.append(site, i, r[k])
    maps = Maps(store, base, LMFamily(LM_INFO))
    maps.begin(PROMPTS, SETS, max_new_tokens=7)
    return maps, rows


def test_layer_matrix_mean_set_difference_baseline_and_difference(lm_run):
    maps, rows = lm_run
    sites = [f"blocks.{layer}.mlp.hook_post" for layer in range(2)]

    def mean(site, which):
        return np.concatenate([rows[site, i] for i in which]).astype(np.float64).mean(0)
    want = np.stack([mean(s, range(3)) for s in sites])
    np.testing.assert_allclose(maps.layer_matrix(View()), want, rtol=1e-5, atol=1e-6)
    # set difference A - B: the forget prompts' mean minus the retain prompt's
    view = View(diff=True, set_a="forget", set_b="retain")
    want_ab = np.stack([mean(s, (0, 1)) - mean(s, (2,)) for s in sites])
    np.testing.assert_allclose(maps.layer_matrix(view), want_ab, rtol=1e-5, atol=1e-6)
    # the baseline is every value 1 lower; the difference edited - baseline is 1 everywhere
    np.testing.assert_allclose(maps.layer_matrix(View(show=BASELINE)), want - 1, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(maps.layer_matrix(View(show=DIFFERENCE)), np.ones((2, 6)),
                               atol=1e-5)
    # an unknown set: nothing to draw yet
    assert maps.layer_matrix(View(diff=True, set_a="forget", set_b="nope")) is None
    m, levels, labels = maps.layer_view(View())
    assert labels == ["L0", "L1"] and levels[1] > 0 and levels[0] == -levels[1]


def test_token_matrix_keyspace_and_streaming_height(lm_run):
    maps, rows = lm_run
    site = "blocks.1.mlp.hook_post"
    got, toks = maps.token_matrix(View(layer=1, prompt=2))
    np.testing.assert_array_equal(got, rows[site, 2])
    assert toks == ["p20", "p21", "p22", "p23", "g20"]
    got, _ = maps.token_matrix(View(layer=1, prompt=9))          # past the end: the last prompt
    np.testing.assert_array_equal(got, rows[site, 2])
    got, _ = maps.token_matrix(View(layer=1, prompt=0, show=DIFFERENCE))
    np.testing.assert_allclose(got, np.ones((4, 6)), atol=1e-6)
    # while the run streams the map keeps its final height: prompt length + max new tokens
    data, levels, labels = maps.token_view(View(layer=1, prompt=1), running=True)
    assert data.shape == (3 + 7, 6) and labels[:3] == ["p10", "p11", "p12"]
    assert labels[3:] == [""] * 7 and not data[3:].any()
    np.testing.assert_array_equal(data[:3], rows[site, 1])
    data, _, _ = maps.token_view(View(layer=1, prompt=1), running=False)
    assert data.shape == (3, 6)
    # key space: each prompt's last prompt token (not its last generated one)
    x, sets, texts = maps.keyspace_matrix(View(layer=0))
    want = np.stack([rows["blocks.0.mlp.hook_post", i][n - 1] for i, n in enumerate((2, 3, 4))])
    np.testing.assert_array_equal(x, want)
    assert sets == list(SETS) and texts == list(PROMPTS)
    # a site that was not captured: no points
    assert maps.keyspace_matrix(View(layer=0, kind="mlp.hook_pre")) is None


def test_neuron_profile_per_set_and_top_activations(lm_run):
    maps, rows = lm_run
    site = "blocks.0.mlp.hook_post"
    values, top = maps.neuron_profile(site, 4)
    np.testing.assert_array_equal(values["forget"], np.concatenate([rows[site, 0][:, 4],
                                                                    rows[site, 1][:, 4]]))
    np.testing.assert_array_equal(values["retain"], rows[site, 2][:, 4])
    # one entry per prompt, its highest value and the token there, highest first
    want = []
    for i in range(3):
        col = rows[site, i][:, 4]
        k = int(np.argmax(col))
        tok = ([f"p{i}{j}" for j in range((2, 3, 4)[i])]
               + [f"g{i}{j}" for j in range(4)])[k]
        want.append((float(col[k]), f"{tok!r} in “{PROMPTS[i]}”"))
    assert top == sorted(want, key=lambda t: -t[0])
    assert maps.neuron_profile(site, 99) == ({}, [])        # no such neuron


def test_levels_hold_until_the_data_outgrow_or_shrink_a_lot():
    lv = Levels()
    data = np.array([[0.0, 2.0, -4.0]])
    amp = float(np.percentile([2.0, 4.0], 99.5))     # the non-zero magnitudes
    assert lv("a", data) == (-amp, amp)
    assert lv("a", data * 1.2) == (-amp, amp)        # 20% more: the scale stays
    assert lv("a", data * 1.3) == (-1.3 * amp, 1.3 * amp)
    assert lv("a", data * 0.6) == (-1.3 * amp, 1.3 * amp)   # 0.6 / 1.3: not a lot less
    assert lv("a", data * 0.3)[1] == pytest.approx(0.3 * amp)
    assert lv("b", np.zeros((2, 2))) == (-1.0, 1.0)
    lv.clear()
    assert lv("a", data) == (-amp, amp)


def test_robust_levels_are_not_set_by_one_saturated_neuron():
    """A spiking layer's class x neuron rates: one neuron fires in every bin (rate 1), the
    others at 0.02 .. 0.2; the SNN family's layer map scales to the 90th percentile of the
    neurons' peaks, not to the saturated one."""
    rates = np.tile(np.linspace(0.02, 0.2, 48), (8, 1))
    rates[3, 5] = 0.5                                 # one class-selective neuron
    rates[:, 10] = 1.0                                # one saturated neuron
    peaks = np.sort(np.abs(rates).max(0))
    want = peaks[42] + 0.3 * (peaks[43] - peaks[42])  # numpy's linear 90th percentile of 48
    lo, hi = Levels()("layer", rates, robust=True)
    assert hi == pytest.approx(want) and lo == -hi
    assert hi < 0.25
    assert Levels()("layer", rates)[1] == pytest.approx(1.0)   # the plain scale: the outlier
    assert family_for({"kind": "snn"}).robust_levels and not family_for(LM_INFO).robust_levels


def test_family_site_names_rows_and_lens():
    fam = family_for(LM_INFO)
    assert isinstance(fam, LMFamily) and fam.kind == "lm"
    assert fam.neuron_kinds() == ["mlp.hook_pre", "mlp.hook_post"]
    assert fam.site(1, "mlp.hook_pre") == "blocks.1.mlp.hook_pre"
    # gate / up / post neurons j of a layer mark the same row; other sites none
    assert [fam.site_row(s) for s in ("blocks.1.mlp.hook_pre", "blocks.0.mlp.hook_post",
                                      "blocks.1.hook_resid_post",
                                      "model.layers.1.mlp.down_proj:input")] == [1, 0, None, None]
    assert fam.layer_columns("mlp.hook_post") == 6
    assert fam.lens_error("blocks.0.mlp.hook_post") is None
    assert "hook_post" in fam.lens_error("blocks.0.mlp.hook_pre")
    assert fam.model_label() == "tiny · llama · 2 layers · 1.2M params"
    assert [s.label for s in fam.shipped()][:2] == ["arithmetic (probe split)",
                                                    "comprehension (probe split)"]
    assert family_for(None).neuron_kinds() == ["mlp.hook_pre", "mlp.hook_pre_linear",
                                               "mlp.hook_post"]


# -- a diffusion pipeline's run --------------------------------------------------------------------
DIFF_SITES = ["unet.down.ff.hook_post", "unet.mid.ff.hook_post", "unet.up.ff.hook_post"]
DIFF_INFO = {"name": "sd", "kind": "diffusion", "model_type": "unet", "n_layers": 3,
             "n_params": 2e6, "sites": dict(zip(DIFF_SITES, (4, 6, 4))),
             "site_list": DIFF_SITES, "aliases": dict(zip(DIFF_SITES, ("down", "mid", "up")))}


def test_diffusion_maps_pad_blocks_and_take_steps():
    rng = np.random.default_rng(2)
    store = CaptureStore()
    sets = ("ordinary", "ordinary", "memorized")
    rows = {}
    for i, s in enumerate(sets):
        store.set_prompt(i, f"prompt {i}", s)
        for site, width in DIFF_INFO["sites"].items():
            rows[site, i] = rng.normal(size=(5, width)).astype(np.float32)   # 5 steps
            for step in range(5):
                store.append(site, i, rows[site, i][step], step=step)
    fam = family_for(DIFF_INFO)
    assert isinstance(fam, DiffusionFamily) and fam.uses_steps and not fam.text_output
    maps = Maps(store, CaptureStore(), fam)
    maps.begin([f"prompt {i}" for i in range(3)], sets)
    # all steps: each block's mean over every row, padded to the widest block
    m = maps.layer_matrix(View())
    assert m.shape == (3, 6)
    for b, site in enumerate(DIFF_SITES):
        w = DIFF_INFO["sites"][site]
        want = np.concatenate([rows[site, i] for i in range(3)]).astype(np.float64).mean(0)
        np.testing.assert_allclose(m[b, :w], want, rtol=1e-5, atol=1e-6)
        assert not m[b, w:].any()
    # one step: the mean over prompts at that step; the set difference at that step
    m = maps.layer_matrix(View(step=3))
    np.testing.assert_allclose(m[1], np.mean([rows[DIFF_SITES[1], i][3] for i in range(3)], 0),
                               rtol=1e-5, atol=1e-6)
    m = maps.layer_matrix(View(step=3, diff=True, set_a="memorized", set_b="ordinary"))
    want = rows[DIFF_SITES[0], 2][3] - (rows[DIFF_SITES[0], 0][3] + rows[DIFF_SITES[0], 1][3]) / 2
    np.testing.assert_allclose(m[0, :4], want, rtol=1e-5, atol=1e-6)
    assert maps.layer_view(View())[2] == ["down", "mid", "up"]
    # the step map of a block and prompt; a prompt's key-space point is its mean over steps
    got, labels = maps.token_matrix(View(layer=1, prompt=2))
    np.testing.assert_array_equal(got, rows[DIFF_SITES[1], 2])
    assert labels == ["t0", "t1", "t2", "t3", "t4"]
    x, _, _ = maps.keyspace_matrix(View(layer=2))
    np.testing.assert_allclose(x, np.stack([rows[DIFF_SITES[2], i].mean(0) for i in range(3)]),
                               rtol=1e-6)
    assert maps.expected_rows(View(), running=True) == 0
    values, top = maps.neuron_profile(DIFF_SITES[1], 5)
    assert top[0][1].startswith("'step ") and len(values["ordinary"]) == 10
    assert fam.site_row(DIFF_SITES[2]) == 2 and fam.site_row("blocks.0.mlp.hook_post") is None
    assert fam.layer_columns("ff.hook_post") == 6 and "language models" in fam.lens_error("x")
    assert [s.name for s in fam.shipped()] == ["memorized", "ordinary", "ordinary-probe"]


# -- the prompt list -------------------------------------------------------------------------------
def test_prompt_list_sets_runs_and_lasso():
    from neurolens.evals.skills import answer_stop
    pl = PromptList()
    assert pl.add(["a", "b"], " ") == "prompts"
    pl.add_answered([("Compute: 1+1=", "2"), ("Compute: 2+2=", None)], "math")
    pl.add(["c\nd"], "prompts")
    assert pl.set_names() == ["prompts", "math"]
    assert pl.table_rows() == [("prompts", "a", 0), ("prompts", "b", 0),
                               ("math", "Compute: 1+1=", 1), ("math", "Compute: 2+2=", 1),
                               ("prompts", "c ⏎ d", 0)]
    assert pl.answers == {"Compute: 1+1=": "2"}
    rp = pl.for_run(True, "typed", "t", stop_at_answers=True)
    assert rp.prompts == ("a", "b", "Compute: 1+1=", "Compute: 2+2=", "c\nd")
    assert rp.set_names == ("prompts", "prompts", "math", "math", "prompts")
    assert rp.answers == (None, None, "2", None, None)
    assert rp.row_stop == ((), (), (answer_stop("2"),), (), ())
    assert pl.for_run(True, "typed", "t", stop_at_answers=False).row_stop is None
    rp = pl.for_run(False, "hello", "  ", stop_at_answers=True)
    assert (rp.prompts, rp.set_names, rp.answers, rp.row_stop) == (("hello",), ("typed",),
                                                                    (None,), None)
    assert pl.for_run(False, "  \n", "t", True) is None
    assert pl.move_to_set(["a", "c\nd"]) == "lasso 1"
    assert pl.move_to_set(["b"]) == "lasso 2"
    assert pl.move_to_set(["b"], "math") == "lasso 3"       # a taken name is not reused
    assert pl.set_names() == ["lasso 1", "lasso 3", "math"]
    assert pl.by_set()["math"] == [{"prompt": "Compute: 1+1=", "answer": "2"},
                                   {"prompt": "Compute: 2+2=", "answer": None}]


# -- the Methods form from the registry ------------------------------------------------------------
def test_form_fields_come_from_the_params_dataclass():
    fields = {f.name: f for f in form_fields(registry.get("neurostrike"))}
    assert fields["layers_fraction"].kind == "choice"
    assert fields["layers_fraction"].choices == (0.25, 0.5, 0.75, 1.0)
    assert fields["layers_fraction"].label == "prune in first" and fields["z"].default == 3.0
    fields = {f.name: f for f in form_fields(registry.get("key-space"))}
    assert fields["layer"].kind == "text" and fields["alpha"].kind == "float"
    assert fields["alpha"].default == 2.0      # the form starts where the GUI always did
    assert [f.kind for f in form_fields(registry.get("memorization"))] == ["float", "int", "int"]
    assert (text_value(""), text_value(" 3 "), text_value("0.5"), text_value("auto")) == (
        None, 3, 0.5, "auto")


def test_role_defaults_follow_the_loaded_sets():
    na, ns, mz = (registry.get(m) for m in ("neuron-adjust", "neurostrike", "memorization"))
    assert role_defaults(na, ["forget", "retain"]) == {"forget": "forget", "retain": "retain"}
    three = ["arithmetic", "refusal", "benign"]
    assert role_defaults(na, three) == {"forget": "arithmetic", "retain": ALL_OTHERS_KEY}
    assert role_defaults(ns, three) == {"harmful": "refusal", "benign": ALL_OTHERS_KEY}
    assert role_defaults(ns, ["harmless", "harmful-x", "z"])["harmful"] == "harmful-x"
    assert role_defaults(mz, three) == {"target": "arithmetic", "base": "refusal"}
    # a picked set stays; a role never shows its partner's set while another is there
    assert role_defaults(ns, three, {"harmful": "benign"}) == {"harmful": "benign",
                                                               "benign": ALL_OTHERS_KEY}
    assert role_defaults(mz, three, {"base": "arithmetic"})["base"] == "refusal"
    assert role_defaults(na, ["only"]) == {"forget": "only", "retain": "only"}
    assert role_defaults(na, []) == {"forget": "", "retain": ""}
    assert role_choices(na.role("retain"), ["a"]) == [("a", "a")]
    assert role_choices(mz.role("base"), three) == [(n, n) for n in three]


def test_method_sets_resolve_roles_all_others_and_answers():
    pl = PromptList()
    pl.add_answered([("Compute: 1+1=", "2"), ("Compute: 2+2=", "4")], "arithmetic")
    pl.add_answered([("User: PIN?\nAssistant:", " I can't help with that.")], "refusal")
    pl.add(["Story: a kite."], "story")
    na = registry.get("neuron-adjust")
    params = {"forget": "arithmetic", "retain": ALL_OTHERS_KEY, "with_answers": True}
    sets = method_sets(pl, na, params)
    assert sets["forget"] == ["Compute: 1+1=2", "Compute: 2+2=4"]
    assert sets["retain"] == ["User: PIN?\nAssistant: I can't help with that.", "Story: a kite."]
    assert sets["all"] == [p for _, p in pl.rows]
    assert params["retain"] == "refusal + story" and params["with_answers"] is True
    params = {"forget": "story", "retain": "arithmetic", "with_answers": False}
    sets = method_sets(pl, na, params)
    assert sets["retain"] == ["Compute: 1+1=", "Compute: 2+2="]
    # asked to probe answers, but none of the answered roles' texts has one
    params = {"forget": "story", "retain": "story", "with_answers": True}
    method_sets(pl, na, params)
    assert params["with_answers"] is False
    # a role that is not answered takes the prompts alone
    ns = registry.get("neurostrike")
    sets = method_sets(pl, ns, {"harmful": "refusal", "benign": "arithmetic",
                                "with_answers": True})
    assert sets["harmful"] == ["User: PIN?\nAssistant:"]
    assert sets["benign"] == ["Compute: 1+1=2", "Compute: 2+2=4"]


# -- results as text -------------------------------------------------------------------------------
def test_results_as_text_and_rows():
    assert results.output_html("a<b", "c\nd") == (
        "<span style='color:#555'>a&lt;b</span><span style='background:#fff3b0'>c⏎<br>d</span>")
    sel = [("blocks.1.mlp.hook_post", j) for j in range(14)]
    assert results.selection_text(sel) == ", ".join(f"L1.N{j}" for j in range(12)) + " … (+2)"
    assert results.selection_text([]) == "none"
    items = [{"changed": True}, {"changed": False}, {"changed": True}]
    assert results.compare_status({"items": items, "seconds": 1.234}) == (
        "compared in 1.23s: 2 of 3 outputs changed")
    r = {"diffusion": True, "mean_abs_diff": [0.0, 0.5, 0.002], "seconds": 2.0,
         "diff": np.array([[0.0, 2.0]]), "before": 0, "after": 1, "n_edits": 1, "seed": 7}
    assert results.image_compare_status(r) == "compared in 2.00s: 2 of 3 images changed"
    rows, caption = results.image_compare_rows(r)
    np.testing.assert_array_equal(rows[2], [[0.0, 1.0]])
    assert "seeds (from 7)" in caption and "0.000, 0.500, 0.002" in caption
    assert results.metric_rows([{"set": "a", "before": 0.5, "after": 0.25, "relative": 0.5},
                                {"set": "b", "before": 0.0, "after": 0.0, "relative": None}]) == [
        ["a", "0.500", "0.250", "0.500"], ["b", "0.000", "0.000", "n/a"]]
    assert results.token_html(["a", "b", "c"], 1, ["a", "x"]) == (
        "a<span style='color:#c00;font-weight:bold'>▶</span>"
        "<span style='background:#ffc9c9'>b</span><span style='background:#ffc9c9'>c</span>")
    probs = results.token_probabilities({"base_logprobs": [0.0, np.log(0.25)],
                                         "edit_logprobs": [np.log(0.5)]})
    assert [n for n, _ in probs] == ["baseline", "edited"]
    np.testing.assert_allclose(probs[0][1], [1.0, 0.25])


def test_export_message_says_what_was_baked_and_how_the_check_went():
    r = {"path": "/out", "baked": ["prune L1 (3)"], "sidecar": [], "check": {
        "prompt": "Compute: 1+1=", "max_abs_logit_diff": 2e-6, "same_output": True}}
    msg = results.export_message(r)
    assert "Baked into the weights (1)" in msg and "  • prune L1 (3)" in msg
    assert "Reload check on “Compute: 1+1=”: passed (max logit difference 2.00e-06" in msg
    r["check"]["max_abs_logit_diff"] = 1e-3            # over the tolerance: the check fails
    assert ": FAILED (max logit" in results.export_message(r)
    r = {"path": "/out", "baked": [], "sidecar": ["gate L1"], "check": {
        "prompt": "a digit", "max_abs_pixel_diff": 0.0, "same_output": True}}
    msg = results.export_message(r)
    assert "NOT baked (1)" in msg and "passed (max pixel difference 0.00e+00" in msg
    r = {"path": "/out", "baked": [], "sidecar": [], "check": {}}
    assert "the checkpoint equals the loaded model" in results.export_message(r)
    assert results.method_report({"text": "fit", "ops": [1, 2]}) == (
        "fit\n→ 2 edit(s) added to the edit list")


def test_set_scores_count_right_answers_per_set():
    from neurolens.evals.scoring import set_scores
    sets = ("math", "math", "math", "story", "refusal")
    answers = ("4", "6", "8", None, " I can't help with that.")
    before = ("4\n", "6 apples", "8", "once", "Sorry, I can't help.")
    after = ("5\n", "6", "9", "twice", "Sure: 1234")
    got = set_scores(sets, answers, before, after)
    # math: before 4 and 8 right (the first line "6 apples" is not "6"), after only "6"
    assert got == [{"set": "math", "n": 3, "before": 2 / 3, "after": 1 / 3, "relative": 0.5},
                   {"set": "refusal", "n": 1, "before": 1.0, "after": 0.0, "relative": 0.0}]
    assert set_scores(("a",), None, ("x",), ("y",)) == []
    assert set_scores(("a",), ("1",), ("2",), ("1",))[0]["relative"] is None
