"""Export of a spiking network: the folder (whole-bin delays, pruned weights zeroed, reload equal)
and the portable .npz with its numpy-only forward (neurolens.engine.snn.reference), checked
against the model and against hand-computed numbers and plain loops written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

import neurolens as nl
from neurolens.engine.snn import reference as ref
from neurolens.engine.snn.network import save_network
from neurolens.resources import model_path
from tiny import tiny_snn_net

DEMO = model_path("demo-snn")
needs_demo = pytest.mark.skipif(not (DEMO / "config.json").is_file(), reason="no demo SNN")


def _tiny(tmp_path, delays="learned", seed=0):
    return nl.load(save_network(tiny_snn_net(delays, seed), tmp_path / f"net-{delays}"))


def _edits(tmp_path, edits):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"format": "neurolens.edits/1", "edits": edits}))
    return nl.EditSet.load(p)


def test_reference_projection_equals_a_per_synapse_loop():
    """z[t, j] = sum_i w[j, i] x[t - d[j, i], i], written as a plain loop over synapses and
    bins."""
    rng = np.random.default_rng(0)
    x = (rng.random((2, 9, 3)) < 0.4).astype(np.float64)
    w = rng.normal(size=(4, 3))
    d = rng.integers(0, 5, size=(4, 3))
    z = ref.delayed_projection(x, w, d, kernel_size=5)
    assert z.shape == (2, 9 + 2, 4)
    want = np.zeros_like(z)
    for b in range(2):
        for j in range(4):
            for i in range(3):
                for t in range(z.shape[1]):
                    s = t - d[j, i]
                    if 0 <= s < 9:
                        want[b, t, j] += w[j, i] * x[b, s, i]
    np.testing.assert_allclose(z, want, atol=1e-12)


def test_reference_lif_equals_a_hand_computed_trace():
    """tau 2 (keep half), threshold 1: inputs 0.6, 0.6, 0.2, 1.5, 0 ->
    H = 0.6, 0.9, 0.65, 1.825 (spike, reset), 0; the readout (no spikes) keeps integrating."""
    z = np.array([0.6, 0.6, 0.2, 1.5, 0.0])[None, :, None]
    s, h = ref.lif(z, tau=2.0, threshold=1.0, spiking=True)
    np.testing.assert_allclose(h[0, :, 0], [0.6, 0.9, 0.65, 1.825, 0.0])
    np.testing.assert_array_equal(s[0, :, 0], [0, 0, 0, 1, 0])
    s2, h2 = ref.lif(z, tau=2.0, threshold=1.0, spiking=False)
    assert s2 is None
    np.testing.assert_allclose(h2[0, :, 0], [0.6, 0.9, 0.65, 1.825, 0.9125])


def test_npz_is_plain_arrays_and_the_numpy_forward_equals_the_model(tmp_path):
    m = _tiny(tmp_path)
    path = m.export_npz(None, tmp_path / "net.npz")
    with np.load(path, allow_pickle=False) as f:      # no pickled objects in the file
        keys = set(f.files)
        assert f["layers.0.delay"].dtype == np.int64 and f["layers.0.weight"].dtype == np.float32
    assert {"format", "n_layers", "kernel_size", "tau", "threshold", "layers.0.weight",
            "layers.0.delay", "layers.0.bn_mean", "layers.0.bn_var", "layers.0.bn_weight",
            "layers.0.bn_bias", "layers.0.bn_eps", "layers.1.weight", "layers.1.delay"} <= keys
    p = ref.load(path)
    np.testing.assert_array_equal(p["layers.0.delay"], m.delays(0))
    x = (np.random.default_rng(1).random((16, 12, 4)) < 0.5).astype(np.float32)
    pred, trace = ref.forward(p, x)
    out = m.classify(x)
    np.testing.assert_array_equal(pred, out.predictions)
    cap = m.capture(x, ["layers.0.hook_v", "layers.1.hook_v", "layers.0.hook_spikes"])
    for i in range(16):
        np.testing.assert_allclose(cap["layers.0.hook_v"][i], trace[0]["v"][i], atol=1e-5)
        np.testing.assert_allclose(cap["layers.1.hook_v"][i], trace[1]["v"][i], atol=1e-5)
        np.testing.assert_array_equal(cap["layers.0.hook_spikes"][i], trace[0]["spikes"][i])


def test_npz_bakes_the_edits_and_refuses_a_blur(tmp_path):
    m = _tiny(tmp_path)
    e = _edits(tmp_path, [{"op": "prune_synapses", "site": "layers.0.synapses",
                           "synapses": [[0, 1], [2, 3]]},
                          {"op": "delay_zero", "site": "layers.1.synapses"}])
    p = ref.load(m.export_npz(e, tmp_path / "e.npz"))
    w = m.weights(0)
    w[0, 1] = w[2, 3] = 0.0
    np.testing.assert_array_equal(p["layers.0.weight"], w)
    assert (p["layers.1.delay"] == 0).all()
    x = (np.random.default_rng(2).random((16, 12, 4)) < 0.5).astype(np.float32)
    np.testing.assert_array_equal(ref.forward(p, x)[0], m.classify(x, edits=e).predictions)
    blur = _edits(tmp_path, [{"op": "delay_blur", "site": "layers.0.synapses", "sigma": 1.0}])
    with pytest.raises(nl.InputError, match="do not bake"):
        m.export_npz(blur, tmp_path / "b.npz")
    with pytest.raises(nl.InputError, match="exists"):
        m.export_npz(None, tmp_path / "e.npz")


def test_no_delay_network_exports_and_runs(tmp_path):
    m = _tiny(tmp_path, delays="none")
    p = ref.load(m.export_npz(None, tmp_path / "n.npz"))
    assert int(p["kernel_size"]) == 1 and (p["layers.0.delay"] == 0).all()
    x = (np.random.default_rng(3).random((8, 10, 4)) < 0.5).astype(np.float32)
    np.testing.assert_array_equal(ref.forward(p, x)[0], m.classify(x).predictions)


def test_folder_export_has_whole_bin_delays_zeroed_weights_and_reloads_equal(tmp_path):
    m = _tiny(tmp_path)
    e = _edits(tmp_path, [{"op": "prune_synapses", "site": "layers.0.synapses",
                           "synapses": [[1, 0]]},
                          {"op": "delay_jitter", "site": "layers.*.synapses", "bins": 1}])
    report = m.export(e, tmp_path / "out")
    assert not report.sidecar
    assert "neurolens.engine.snn.network.load_network loads the folder" in report.summary()
    from safetensors.numpy import load_file
    st = load_file(str(tmp_path / "out" / "model.safetensors"))
    d0 = st["layers.0.proj.delay"]
    np.testing.assert_array_equal(d0, np.round(d0))
    assert st["layers.0.proj.weight"][1, 0] == 0.0
    back = nl.load(tmp_path / "out")
    x = (np.random.default_rng(4).random((16, 12, 4)) < 0.5).astype(np.float32)
    a, b = m.classify(x, edits=e), back.classify(x)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


@needs_demo
def test_numpy_forward_reproduces_the_demo_on_heldout(tmp_path):
    """Every held-out prediction equal; membrane traces of both layers within 1e-5."""
    m = nl.load(DEMO)
    s = m.samples(m.default_samples())
    s = s.subset(np.arange(512))
    p = ref.load(m.export_npz(None, tmp_path / "demo.npz"))
    pred, trace = ref.forward(p, s.spikes)
    out = m.classify(s)
    assert (pred == out.predictions).all()
    assert out.accuracy > 0.9
    cap = m.capture(s, ["layers.0.hook_v", "layers.1.hook_v"])
    for l, site in enumerate(["layers.0.hook_v", "layers.1.hook_v"]):
        worst = max(float(np.abs(cap[site][i] - trace[l]["v"][i]).max()) for i in range(len(s)))
        assert worst < 1e-5, (site, worst)
