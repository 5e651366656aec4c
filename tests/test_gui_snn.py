"""Spiking networks in the window: the Qt-free presenters against numpy on the arrays, then the
real window (pytest-qt, offscreen) on a tiny network built here and on the shipped demo SNN:
load, pick samples, run (rasters and class maps), click a neuron (its kernels in the
inspector), prune, compare (per class, as the engine compares), export and reload."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurolens.gui.presenters import snn as P
from neurolens.gui.presenters.family import SNNFamily, family_for
from neurolens.store import CaptureStore
from test_gui import WAIT, window  # noqa: F401 - the window fixture (scratch settings, autosave)

DEMO = Path(__file__).resolve().parents[1] / "resources" / "models" / "demo-snn"


# -- a tiny network with shipped sample sets -------------------------------------------------------
def _tiny_net(seed: int = 0):
    from tiny import tiny_snn_net
    return tiny_snn_net(seed=seed)


def _samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 12, 4)) < 0.3).astype(np.float32), np.arange(n) % 3


@pytest.fixture(scope="module")
def tiny_snn(tmp_path_factory):
    from safetensors.numpy import save_file

    from neurolens.engine.snn.network import save_network
    folder = save_network(_tiny_net(), tmp_path_factory.mktemp("snn") / "tiny-snn")
    (folder / "samples").mkdir()
    for name, n, seed in (("probe", 9, 1), ("heldout", 12, 2)):
        x, y = _samples(n, seed)
        save_file({"spikes": x, "labels": y.astype(np.int64)},
                  str(folder / "samples" / f"{name}.safetensors"))
    return folder


# -- presenters (no Qt) --------------------------------------------------------------------------
def test_family_for_a_spiking_network():
    info = {"kind": "snn", "n_layers": 2, "class_names": ["a", "b", "c"],
            "sites": {"layers.0.hook_spikes": 6, "layers.0.hook_v": 6, "layers.1.hook_v": 3},
            "sample_files": {"probe": "/x/probe.safetensors"}}
    fam = family_for(info)
    assert isinstance(fam, SNNFamily) and fam.output == "classes" and fam.picker == "samples"
    assert fam.site(1, "hook_spikes") == "layers.1.hook_v"      # the readout never spikes
    assert fam.sites("hook_spikes") == ["layers.0.hook_spikes", "layers.1.hook_v"]
    assert fam.map_site(2, 0, "hook_spikes") == "layers.0.hook_spikes"
    assert fam.map_shape("hook_spikes", 0) == (3, 6)
    assert fam.row_labels(3) == ["a", "b", "c"]
    assert [s.name for s in fam.shipped()] == ["probe"]
    assert "rasters" in fam.panels and "token_box" not in fam.panels


def test_class_matrix_and_set_difference_against_numpy():
    rng = np.random.default_rng(0)
    store = CaptureStore()
    n, site = 10, "layers.0.hook_spikes"
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    sets = ["A"] * 6 + ["B"] * 4
    rows = [(rng.random((7 + i % 3, 5)) < 0.4).astype(np.float32) for i in range(n)]
    for i in range(n):
        store.set_prompt(i, f"s{i}", sets[i])
        store.append(site, i, rows[i][:3])        # bins arrive in order, in two chunks
        store.append(site, i, rows[i][3:])
    rates = np.stack([r.mean(0) for r in rows])
    m = P.class_matrix(store, site, labels, sets, 3)
    for k in range(3):
        np.testing.assert_allclose(m[k], rates[labels == k].mean(0), rtol=1e-6)
    d = P.class_matrix(store, site, labels, sets, 3, diff=True, set_a="A", set_b="B")
    sa, sb = np.array(sets) == "A", np.array(sets) == "B"
    for k in range(3):
        want = rates[sa & (labels == k)].mean(0) - rates[sb & (labels == k)].mean(0)
        np.testing.assert_allclose(d[k], want, rtol=1e-5, atol=1e-7)
    # without labels: one row, the mean over the samples
    np.testing.assert_allclose(P.class_matrix(store, site, None, sets, 3)[0], rates.mean(0),
                               rtol=1e-6)
    # a sample not there yet: nothing to draw
    assert P.class_matrix(store, site, labels, sets + ["A"], 3) is None


def test_synapse_views_against_numpy():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 9, (6, 4))
    w = rng.normal(size=(6, 4))
    w[0, 0] = 0.0
    bins, counts = P.delay_histogram(d, w, 8)
    assert list(bins) == list(range(9))
    np.testing.assert_array_equal(counts, np.bincount(d[w != 0], minlength=9))
    pts = P.delay_weight_points(d, w)
    np.testing.assert_allclose(pts[:, 0], d.reshape(-1))
    np.testing.assert_allclose(pts[:, 1], w.reshape(-1), rtol=1e-6)
    # a neuron whose delays exactly undo class 1's template lines class 1 up in one bin
    tpl = np.array([[1, 4, 7, 10], [10, 1, 7, 4], [4, 10, 1, 7]])
    delays = 12 - tpl[1]
    a = P.alignment(delays, np.ones(4), tpl)
    assert a["best"] == 1 and a["spread"][1] == 0 and (a["spread"][[0, 2]] > 1).all()
    np.testing.assert_allclose(a["relative"][1], 0)
    np.testing.assert_allclose(a["relative"][0], tpl[0] + delays - (tpl[0] + delays).mean())
    kern = rng.normal(size=(6, 4, 5))
    np.testing.assert_array_equal(P.kernel_view(kern, 2), kern[2][:, ::-1])


def test_sample_bank_and_layer_ops():
    bank = P.SampleBank(class_names=["a", "b", "c"])
    x1, y1 = _samples(3, 0)
    x2 = np.ones((2, 10, 4), np.float32)
    assert bank.add("probe", x1, y1) == "probe"
    assert bank.add("probe", x2, [0, 2]) == "probe 2"
    req = bank.for_run(None, 5)
    assert req.spikes.shape == (5, 12, 4) and (req.spikes[3:, 10:] == 0).all()
    assert list(req.labels) == [0, 1, 2, 0, 2] and req.set_names[3] == "probe 2"
    assert req.prompts[1] == "probe 1 · b"
    for op, (_, _pname, default, *_rest) in P.SNN_OPS.items():
        e = P.layer_op(op, 1, default, 3)
        assert e.op == op and e.site == "layers.1.synapses"
    assert P.layer_op("delay_quantize", 0, 4).step == 4
    r = {"per_class": {"a": {"before": 1.0, "after": 0.5}, "b": {"before": None,
                                                                "after": None}},
         "accuracy_before": 0.9, "accuracy_after": 0.6}
    assert P.compare_rows(r) == [("a", "1.000", "0.500", "-0.500"), ("b", "–", "–", "–"),
                                 ("all", "0.900", "0.600", "-0.300")]


def test_readout_probabilities_are_the_engines(tiny_snn):
    """The softmax of the captured readout potential is the engine's class probability."""
    import neurolens as nl
    from neurolens.engine.snn.views import classify_into
    from neurolens.engine.events import Finished
    m = nl.load(str(tiny_snn))
    x, y = _samples(5, 9)
    store = CaptureStore()
    out = None
    for ev in classify_into(m, x, y, [f"s{i}" for i in range(5)], ["t"] * 5, store,
                            batch_size=2):
        if isinstance(ev, Finished):
            out = ev.result
    for i in range(5):
        np.testing.assert_allclose(P.probabilities(store, 2, i), out.probs[i], atol=1e-5)
        assert store.rows("layers.0.hook_spikes", i).shape[0] == P.layer_bins(12, 5, 0)


# -- the window ----------------------------------------------------------------------------------
def _load(qtbot, w, folder):
    w.model_info = None
    w.open_model(str(folder))
    qtbot.waitUntil(lambda: w.model_info is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: w.snn.overview is not None and not w.snn.loading_sets,
                    timeout=WAIT)


def _run(qtbot, w):
    w.last_outputs = None
    w.run()
    assert w.running
    qtbot.waitUntil(lambda: w.last_outputs is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: w.layer_map.has_data() and w.rasters.has_data(), timeout=WAIT)


def _drive(qtbot, w, folder, tmp_path, n_probe):
    """Load, run, click, prune, compare, export, reload: the acceptance's GUI part."""
    import neurolens as nl
    from neurolens.spec.edits import EditSet
    _load(qtbot, w, folder)
    assert w.family.kind == "snn" and w.picker is w.snn
    assert not w.methods_panel.fit_btn.isEnabled()      # no method applies to an SNN yet
    assert not w.token_box.isVisible() and w.rasters.isVisible() and w.delays.isVisible()
    assert len(w.snn.bank) == n_probe and w.prompt_table.rowCount() == n_probe
    m = nl.load(str(folder))
    ov = w.snn.overview
    np.testing.assert_array_equal(ov["layers"][0]["delays"], m.delays(0))
    assert w.delays.counts.sum() == int((m.weights(0) != 0).sum())
    # the held-out set's dead / saturated neurons are counted
    assert set(w.snn.health) == {0} and w.snn.health[0]["n"] == m.sites()["layers.0.hook_v"]

    _run(qtbot, w)
    req = w.runs.req
    out = m.classify(req.spikes, labels=req.labels)
    assert w.last_outputs["accuracy"] == pytest.approx(out.accuracy)
    # the class x neuron firing rates at layer 0 are the numpy ones from a direct capture
    cap = m.capture(req.spikes, sites=["layers.0.hook_spikes"])
    rates = np.stack([cap["layers.0.hook_spikes"][i].mean(0) for i in range(len(req.spikes))])
    data = w.layer_map.data
    for k in range(data.shape[0]):
        if (req.labels == k).any():
            np.testing.assert_allclose(data[k], rates[req.labels == k].mean(0), atol=1e-6)
    # the first sample's readout probabilities and input raster
    np.testing.assert_allclose(w.rasters.data["probs"], out.probs[0], atol=1e-5)
    np.testing.assert_array_equal(w.rasters.data["run: input"], req.spikes[0])
    np.testing.assert_array_equal(w.rasters.data["run: layer 0 spikes"],
                                  cap["layers.0.hook_spikes"][0])
    w.kind_combo.setCurrentText("hook_v")            # the membrane potential instead
    vcap = m.capture(req.spikes[:1], sites=["layers.0.hook_v"])["layers.0.hook_v"][0]
    np.testing.assert_allclose(w.rasters.data["run: layer 0 membrane potential"], vcap,
                               atol=1e-5)
    w.kind_combo.setCurrentText("hook_spikes")

    # click a neuron: the inspector shows its incoming kernels (input x delay)
    j = int(np.argmax(rates.mean(0)))
    w.layer_map.click_cell(0, j)
    assert w.selection == [("layers.0.hook_spikes", j)]
    np.testing.assert_allclose(w.inspector.kernel.data, m.kernels(0)[j][:, ::-1], atol=1e-7)
    assert w.inspector.kernel.isVisible() and not w.inspector.lens.isVisible()
    assert w.layer_map._marks == [(k, j) for k in range(data.shape[0])]
    w.rasters.neuronClicked.emit(0, 1)            # a click on the layer-0 raster
    assert w.selection == [("layers.0.hook_spikes", 1)]
    w.layer_map.click_cell(0, j)

    # prune it (edits panel), add a delay op, compare: per class as the engine compares
    w.edits_panel.op.setCurrentText("prune")
    assert w.edits_panel.add_for_selection() == 1
    w.edits_panel.layer_op.setCurrentIndex(list(P.SNN_OPS).index("delay_quantize"))
    w.edits_panel.op_layer.setValue(0)
    w.edits_panel.param.setValue(2)
    assert w.edits_panel.add_layer_op() == 1
    edits = w.current_edits()
    assert [o.op for o in edits] == ["prune", "delay_quantize"]
    # the delay views and the inspector's kernels follow the delay edit (numpy, by hand)
    d = m.delays(0)
    q = np.floor(d / 2 + 0.5) * 2
    q = np.where(q > m.max_delay, q - 2, q).astype(np.int64)
    qtbot.waitUntil(lambda: np.array_equal(w.snn.overview["layers"][0]["delays"], q),
                    timeout=WAIT)
    want = np.zeros((m.n_inputs, m.max_delay + 1), np.float32)
    want[np.arange(m.n_inputs), q[j]] = m.weights(0)[j]
    qtbot.waitUntil(lambda: np.allclose(w.inspector.kernel.data, want, atol=1e-6),
                    timeout=WAIT)
    # dead / saturated neurons are counted again under the edits: the pruned neuron never
    # spikes; the counts are a direct capture's (numpy on the held-out set, not the engine's)
    qtbot.waitUntil(lambda: w.snn.health_edited is not None, timeout=WAIT)
    held = m.samples(str(folder / "samples" / "heldout.safetensors"))
    hcap = m.capture(held, sites=["layers.0.hook_spikes"], edits=EditSet(list(edits)))
    per = np.stack([hcap["layers.0.hook_spikes"][i].mean(0) for i in range(len(held))])
    he = w.snn.health_edited[0]
    assert he["dead"][j] and he["n_dead"] == int((per.max(0) == 0).sum())
    assert he["n_saturated"] == int((per.mean(0) > 0.5).sum())
    assert f"edited: dead {he['n_dead']}/" in w.picker_label.text()
    assert "edited: dead" in w.inspector.kernel.note.text()
    w.compare_result = None
    w.compare()
    qtbot.waitUntil(lambda: w.compare_result is not None, timeout=WAIT)
    direct = m.compare(req.spikes if req.labels is None else m.samples(req.spikes, req.labels),
                       EditSet(list(edits))).to_json()
    r = w.compare_result
    assert r["per_class"] == direct["per_class"] and r["n_changed"] == direct["n_changed"]
    assert w.compare_view.metrics.rowCount() == len(direct["per_class"]) + 1
    qtbot.waitUntil(lambda: len(w.rasters.columns) == 2, timeout=WAIT)   # side by side

    # export with the reload check, then open the exported folder
    out_dir = tmp_path / "exported"
    w.export_model(str(out_dir))
    qtbot.waitUntil(lambda: w.export_result is not None, timeout=WAIT)
    check = w.export_result["check"]
    assert check["same_output"] and check["max_abs_prob_diff"] < 1e-4
    assert "Reload check" in w.export_message and "passed" in w.export_message
    again = nl.load(str(out_dir))
    np.testing.assert_array_equal(again.classify(req.spikes).predictions,
                                  m.classify(req.spikes, edits=EditSet(list(edits))).predictions)
    # reload: the exported folder in the window, without the edits, classifies as the edited
    w.edit_model.replace_all([], "clear")
    w.edits_panel.refresh()
    w.edits_changed()
    _load(qtbot, w, out_dir)
    assert w.model_info["name"] == str(out_dir)
    _run(qtbot, w)
    assert w.last_outputs["accuracy"] == pytest.approx(r["accuracy_after"])
    return again


def test_tiny_snn_load_run_click_prune_compare_export_reload(qtbot, window, tiny_snn,  # noqa: F811
                                                              tmp_path):
    w = window
    _drive(qtbot, w, tiny_snn, tmp_path, n_probe=9)
    # a sample file through the picker; the set difference A - B per class
    w.snn.load_file(str(tiny_snn / "samples" / "heldout.safetensors"), "held")
    qtbot.waitUntil(lambda: not w.snn.loading_sets, timeout=WAIT)
    assert w.snn.bank.set_names() == ["probe", "held"]
    _run(qtbot, w)
    w.set_a.setCurrentText("probe")
    w.set_b.setCurrentText("held")
    w.stat_combo.setCurrentIndex(1)
    d = w.layer_matrix()
    req = w.runs.req
    want = P.class_matrix(w.store, "layers.0.hook_spikes", req.labels, req.set_names, 3,
                          True, "probe", "held")
    np.testing.assert_allclose(d, want)
    # a session keeps the sample sets (files and counts) and reopens to them
    ses = w.save_session(str(tmp_path / "snn.neurolens.json"))
    w.snn.clear()
    assert w.open_session(str(ses))
    qtbot.waitUntil(lambda: not w.snn.loading_sets and len(w.snn.bank) == 21, timeout=WAIT)
    assert w.snn.bank.set_names() == ["probe", "held"]
    # a wrong sample file: one clear error, the app stays usable
    bad = tmp_path / "bad.safetensors"
    from safetensors.numpy import save_file
    save_file({"spikes": np.zeros((2, 5, 7), np.float32)}, str(bad))
    w.snn.load_file(str(bad))
    qtbot.waitUntil(lambda: not w.snn.loading_sets, timeout=WAIT)
    assert "7 channels" in w.errors[-1]


@pytest.mark.skipif(not (DEMO / "config.json").is_file(), reason="demo SNN not shipped")
def test_demo_snn_views(qtbot, window, tmp_path):  # noqa: F811
    w = window
    w.shipped_n.setValue(48)
    _drive(qtbot, w, DEMO, tmp_path, n_probe=48)
    assert w.layer_map.data.shape == (8, 48)
    assert w.snn.overview["templates"].shape == (8, 12)
    assert "line up" in w.inspector.kernel.note.text()
