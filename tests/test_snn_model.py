"""The spiking-network model family: loading, sites, capture against a plain forward written
here, classification, the synapse and delay ops (hooks and baked exports), and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import neurolens as nl
from neurolens.engine import ops as engine_ops
from neurolens.engine.model import Model
from neurolens.engine.snn.model import SpikingModel
from neurolens.engine.snn.network import SpikingNet, save_network
from neurolens.errors import InputError, LoadError, SpecError
from neurolens.spec import snn_edits as se
from neurolens.store.capture_store import CaptureStore
from tiny import tiny_snn_net

K = 5


def _tiny_net(delays: str = "learned", seed: int = 0) -> SpikingNet:
    return tiny_snn_net(delays, seed, K)


@pytest.fixture
def snn_dir(tmp_path):
    return save_network(_tiny_net(), tmp_path / "snn")


@pytest.fixture
def samples():
    rng = np.random.default_rng(3)
    x = (rng.random((7, 12, 4)) < 0.3).astype(np.float32)
    return x, np.arange(7) % 3


def _state(folder) -> tuple[dict, dict]:
    from safetensors.numpy import load_file
    cfg = json.loads((folder / "config.json").read_text())
    return load_file(str(folder / "model.safetensors")), cfg


def _plain_forward(state: dict, cfg: dict, x: np.ndarray):
    """The network written out in numpy: per layer a per-synapse shift and weighted sum, batch
    norm with the running statistics (hidden layers), a LIF loop; returns the hidden layers'
    spikes and membranes and the readout membrane, each [time, n]."""
    k = 1 if cfg["delays"] == "none" else cfg["kernel_size"]
    keep = 1.0 - 1.0 / cfg["tau"]
    h = x.astype(np.float64)
    spikes, mems = [], []
    n_layers = len(cfg["layer_sizes"])
    for layer in range(n_layers):
        w = state[f"layers.{layer}.proj.weight"].astype(np.float64)
        d = state[f"layers.{layer}.proj.delay"].astype(np.int64)
        t_in, t_out = h.shape[0], h.shape[0] + (k - 1) // 2
        z = np.zeros((t_out, w.shape[0]))
        for t in range(t_out):
            for j in range(w.shape[0]):
                for i in range(w.shape[1]):
                    if 0 <= t - d[j, i] < t_in:
                        z[t, j] += w[j, i] * h[t - d[j, i], i]
        readout = layer == n_layers - 1
        if not readout:
            p = f"layers.{layer}.bn."
            z = ((z - state[p + "running_mean"]) / np.sqrt(state[p + "running_var"] + 1e-5)
                 * state[p + "weight"] + state[p + "bias"])
        v = np.zeros(w.shape[0])
        mem, spk = np.zeros_like(z), np.zeros_like(z)
        for t in range(t_out):
            hh = v * keep + z[t]
            mem[t] = hh
            if readout:
                v = hh
            else:
                spk[t] = hh >= cfg["threshold"]
                v = hh * (1 - spk[t])
        mems.append(mem)
        if not readout:
            spikes.append(spk)
            h = spk
    return spikes, mems


def _no_hooks(model: SpikingModel) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.net.modules())


def test_load_a_saved_snn_folder(snn_dir):
    m = nl.load(snn_dir)
    assert isinstance(m, SpikingModel) and isinstance(m, Model)
    assert m.kind == "snn" and m.model_type == "neurolens-snn" and m.n_layers == 2
    assert m.sites() == {"layers.0.hook_spikes": 6, "layers.0.hook_v": 6, "layers.1.hook_v": 3}
    assert m.resolve_sites("layers.*.hook_v") == ["layers.0.hook_v", "layers.1.hook_v"]
    assert m.resolve_sites("layers.*.synapses") == ["layers.0.synapses", "layers.1.synapses"]
    # weights, learned delays (whole bins), batch norm affine terms
    assert m.n_params() == (4 * 6 + 6 * 3) * 2 + 2 * 6
    assert m.fingerprint == nl.load(snn_dir).fingerprint
    assert m.class_names == ["a", "b", "c"]
    d = m.delays(0)
    assert d.shape == (6, 4) and d.dtype == np.int64 and d.min() >= 0 and d.max() <= K - 1
    assert m.kernels(1).shape == (3, 6, K)
    k = m.kernels(0)        # one-hot: one nonzero tap per synapse, at K - 1 - delay
    assert np.array_equal(np.argmax(np.abs(k), -1), K - 1 - d)
    np.testing.assert_allclose(k.sum(-1), m.weights(0), atol=1e-7)


def test_capture_equals_a_plain_forward(snn_dir, samples):
    m = nl.load(snn_dir)
    x, y = samples
    cap = m.capture(x, ["layers.*.hook_spikes", "layers.*.hook_v"])
    assert cap.keys() == ["layers.0.hook_spikes", "layers.0.hook_v", "layers.1.hook_v"]
    state, cfg = _state(snn_dir)
    out = m.classify(x, labels=y)
    fired = 0
    for i in range(len(x)):
        spikes, mems = _plain_forward(state, cfg, x[i])
        got = cap["layers.0.hook_spikes"][i]
        assert got.shape == (12 + 2, 6)          # time bins in order, K // 2 more than the input
        np.testing.assert_array_equal(got, spikes[0])
        np.testing.assert_allclose(cap["layers.0.hook_v"][i], mems[0], atol=1e-5)
        np.testing.assert_allclose(cap["layers.1.hook_v"][i], mems[1], atol=1e-5)
        p = np.exp(mems[1] - mems[1].max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(out.probs[i], p, atol=1e-5)
        assert out.predictions[i] == int(np.argmax(p.sum(0)))
        fired += int(spikes[0].sum())
    assert fired > 10                             # the test network does spike
    assert out.accuracy == pytest.approx(float((out.predictions == y).mean()))
    assert _no_hooks(m)


def test_capture_reductions_and_the_store(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    full = m.capture(x[:2], "layers.0.hook_v")
    mean = m.capture(x[:2], "layers.0.hook_v", reduce="mean")
    np.testing.assert_allclose(mean["layers.0.hook_v"][1][0], full["layers.0.hook_v"][1].mean(0),
                               atol=1e-6)
    with pytest.raises(InputError, match="parameters"):
        m.capture(x, "layers.0.synapses")
    disk = m.capture(x[:2], "layers.0.hook_v", out=tmp_path / "cap.safetensors")
    np.testing.assert_array_equal(disk["layers.0.hook_v"][1], full["layers.0.hook_v"][1])
    saved = full.save(tmp_path / "cap2.safetensors")
    from safetensors.numpy import load_file
    assert load_file(str(saved))["layers.0.hook_v/1"].shape == (12 + 2, 6)
    store = CaptureStore()
    m.capture(x, "layers.0.hook_spikes", store=store, set_name="probe")
    st = store.stats("layers.0.hook_spikes", "probe")
    assert st is not None and st.count == 7 * 14        # every time bin of every sample


def test_classify_events_and_cancel(snn_dir, samples):
    from neurolens.engine.events import BatchDone, Cancelled, Finished, Started
    from neurolens.engine.hooks import CancelToken
    m = nl.load(snn_dir)
    x, y = samples
    evs = list(m.run_events(x, batch_size=3))
    assert isinstance(evs[0], Started) and evs[0].total == 7 and evs[0].unit == "samples"
    assert [e.done for e in evs if isinstance(e, BatchDone)] == [3, 6, 7]
    assert isinstance(evs[-1], Finished) and len(evs[-1].result) == 7
    tok = CancelToken()
    tok.cancel()
    evs = list(m.run_events(x, batch_size=3, cancel=tok))
    assert isinstance(evs[-1], Cancelled)
    assert _no_hooks(m)


def test_prune_neurons_equals_zeroed_outgoing_weights_and_bakes(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    es = nl.EditSet([nl.Prune("layers.0.hook_spikes", [1, 4])])
    cap = m.capture(x, "layers.*.hook_v", edits=es)
    state, cfg = _state(snn_dir)
    state = dict(state)
    w = state["layers.1.proj.weight"].copy()
    w[:, [1, 4]] = 0
    state["layers.1.proj.weight"] = w
    for i in range(len(x)):
        _, mems = _plain_forward(state, cfg, x[i])
        np.testing.assert_allclose(cap["layers.1.hook_v"][i], mems[1], atol=1e-5)
    rep = m.export(es, tmp_path / "out")
    assert len(rep.baked) == 1 and not rep.sidecar
    m2 = nl.load(tmp_path / "out")
    assert np.array_equal(m2.weights(1)[:, [1, 4]], np.zeros((3, 2)))
    np.testing.assert_allclose(m2.classify(x).probs, m.classify(x, edits=es).probs, atol=1e-6)
    assert _no_hooks(m)


def _expected_delays(op, d: np.ndarray, w: np.ndarray) -> np.ndarray:
    top = K - 1
    if op.op == "delay_zero":
        return np.zeros_like(d)
    if op.op == "delay_quantize" and op.phase == "grid":
        # half up to multiples of step; past K - 1: one step down
        q = np.floor(d / op.step + 0.5).astype(np.int64) * op.step
        return np.where(q > top, q - op.step, q)
    if op.op == "delay_quantize":     # per neuron: each offset tried, one synapse at a time
        out = np.empty_like(d)
        for j in range(d.shape[0]):
            best = None
            for off in range(op.step):
                row = []
                for x in d[j]:
                    # the nearest grid point off + step*m in 0..K-1, half up
                    cands = [g for g in range(off, top + 1, op.step)]
                    row.append(min(cands, key=lambda g: (abs(g - x), -g)))
                cost = float(np.sum(np.abs(w[j]) * np.abs(np.array(row) - d[j])))
                if best is None or cost < best[0]:
                    best = (cost, row)
            out[j] = best[1]
        return out
    raise AssertionError(op)


@pytest.mark.parametrize("op", [se.ZeroDelays("layers.0.synapses"),
                                se.QuantizeDelays("layers.0.synapses", 2),
                                se.QuantizeDelays("layers.0.synapses", 3),
                                se.QuantizeDelays("layers.0.synapses", 2, phase="neuron"),
                                se.QuantizeDelays("layers.0.synapses", 4, phase="neuron"),
                                se.ShuffleDelays("layers.0.synapses", seed=4),
                                se.JitterDelays("layers.0.synapses", bins=1, seed=2),
                                se.PruneSynapses("layers.0.synapses", [[0, 1], [5, 3]]),
                                se.PruneSynapses("layers.0.synapses", fraction=0.25)],
                         ids=lambda op: op.describe())
def test_synapse_ops_against_a_plain_forward_and_baked_exactly(op, snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    state, cfg = _state(snn_dir)
    d0 = state["layers.0.proj.delay"].astype(np.int64)
    w0 = state["layers.0.proj.weight"]
    w, d = w0.copy(), d0.copy()
    if op.op in ("delay_zero", "delay_quantize"):
        d = _expected_delays(op, d0, w0)
    elif op.op == "delay_shuffle":
        d = d0.reshape(-1)[np.random.default_rng(4).permutation(d0.size)].reshape(d0.shape)
    elif op.op == "prune_synapses" and op.synapses:
        w[0, 1] = w[5, 3] = 0
    es = nl.EditSet([op])
    m.check_edits(es)
    rep = m.export(es, tmp_path / "out")
    assert len(rep.baked) == 1 and not rep.sidecar, rep.summary()
    m2 = nl.load(tmp_path / "out")
    if op.op == "delay_jitter":
        d = m2.delays(0)
        assert np.abs(d - d0).max() <= 1 and not np.array_equal(d, d0)
        assert d.min() >= 0 and d.max() <= K - 1
    elif op.op == "prune_synapses" and op.fraction is not None:
        w = m2.weights(0)
        gone = w == 0
        assert gone.sum() == 6      # 25% of 24
        assert np.abs(w0[gone]).max() <= np.abs(w0[~gone]).min()
    else:
        assert np.array_equal(m2.delays(0), d)
        np.testing.assert_array_equal(m2.weights(0), w)
    if op.op == "delay_shuffle":
        assert sorted(m2.delays(0).ravel()) == sorted(d0.ravel())
    state2 = dict(state)
    state2["layers.0.proj.delay"] = d.astype(np.float32)
    state2["layers.0.proj.weight"] = w
    hooked = m.capture(x, "layers.1.hook_v", edits=es)
    for i in range(len(x)):
        _, mems = _plain_forward(state2, cfg, x[i])
        np.testing.assert_allclose(hooked["layers.1.hook_v"][i], mems[1], atol=1e-5)
    np.testing.assert_array_equal(m2.classify(x).probs, m.classify(x, edits=es).probs)
    assert np.array_equal(m.delays(0), d0)         # the loaded model is untouched
    assert _no_hooks(m)


def test_ops_on_one_layer_compose_in_order(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    es = nl.EditSet([se.QuantizeDelays("layers.*.synapses", 2),
                     se.ShuffleDelays("layers.1.synapses", seed=1),
                     se.PruneSynapses("layers.1.synapses", fraction=0.5),
                     nl.Prune("layers.0.hook_spikes", [2])])
    m.export(es, tmp_path / "out")
    m2 = nl.load(tmp_path / "out")
    np.testing.assert_array_equal(m2.classify(x).probs, m.classify(x, edits=es).probs)
    assert set(np.unique(m2.delays(0))) <= {0, 2, 4}
    es.save(tmp_path / "e.json")
    back = nl.EditSet.load(tmp_path / "e.json")
    np.testing.assert_array_equal(m.classify(x, edits=back).probs, m2.classify(x).probs)


def test_reblurred_kernels_stay_a_sidecar_that_load_reapplies(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    es = nl.EditSet([se.BlurKernels("layers.0.synapses", sigma=1.0)])
    edited = m.classify(x, edits=es).probs
    assert not np.allclose(edited, m.classify(x).probs)
    rep = m.export(es, tmp_path / "out")
    assert not rep.baked and len(rep.sidecar) == 1
    m2 = nl.load(tmp_path / "out")
    assert len(m2.base_edits) == 1 and m2.notes
    np.testing.assert_allclose(m2.classify(x).probs, edited, atol=1e-6)
    assert "delay_blur" in (tmp_path / "out" / "NEUROLENS.md").read_text()


def test_readout_edits_bake(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    es = nl.EditSet([nl.Scale("layers.1.hook_v", [0], factor=0.5),
                     nl.Prune("layers.1.hook_v", [2])])
    rep = m.export(es, tmp_path / "out")
    assert len(rep.baked) == 2
    np.testing.assert_allclose(nl.load(tmp_path / "out").classify(x).probs,
                               m.classify(x, edits=es).probs, atol=1e-6)


def test_errors_are_one_clear_line(snn_dir, samples, tmp_path):
    m = nl.load(snn_dir)
    x, _ = samples
    with pytest.raises(InputError, match="5 channels, this network takes 4"):
        m.classify(np.zeros((2, 10, 5)))
    with pytest.raises(InputError, match="empty"):
        m.classify(np.zeros((0, 10, 4)))
    with pytest.raises(InputError, match="read-only"):
        m.check_edits(nl.EditSet([nl.Prune("layers.0.hook_v", [0])]))
    with pytest.raises(InputError, match="never spikes"):
        m.resolve_sites("layers.1.hook_spikes")
    with pytest.raises(InputError, match="layers 0..1"):
        m.resolve_sites("layers.5.hook_v")
    with pytest.raises(InputError, match="acts on synapses"):
        m.check_edits(nl.EditSet([se.ZeroDelays("layers.0.hook_spikes")]))
    with pytest.raises(InputError, match="acts on neurons"):
        m.check_edits(nl.EditSet([nl.Prune("layers.0.synapses", [0])]))
    with pytest.raises(InputError, match="out of range"):
        m.check_edits(nl.EditSet([se.PruneSynapses("layers.1.synapses", [[0, 6]])]))
    with pytest.raises(SpecError, match="step"):
        se.QuantizeDelays("layers.0.synapses", -2)
    with pytest.raises(SpecError, match=r"edits\[0\]\.step"):
        nl.EditSet.from_dict({"format": "neurolens.edits/1", "edits": [
            {"op": "delay_quantize", "site": "layers.0.synapses", "step": 0}]})
    with pytest.raises(InputError, match="every time bin"):
        m.check_edits(nl.EditSet([nl.Prune("layers.0.hook_spikes", [0], positions="last")]))
    with pytest.raises(InputError, match="language model"):
        engine_ops.check_applies(nl.TopK("layers.0.hook_spikes", 0.5), "snn")
    nodelay = save_network(_tiny_net("none"), tmp_path / "nd")
    with pytest.raises(InputError, match="no delays"):
        nl.load(nodelay).check_edits(nl.EditSet([se.ZeroDelays("layers.0.synapses")]))
    assert _no_hooks(m)


def test_no_delay_and_fixed_variants_load_and_match_the_plain_forward(tmp_path, samples):
    x, _ = samples
    for mode in ("none", "fixed"):
        d = save_network(_tiny_net(mode, seed=1), tmp_path / mode)
        m = nl.load(d)
        state, cfg = _state(d)
        cap = m.capture(x[:3], "layers.*.hook_v")
        for i in range(3):
            _, mems = _plain_forward(state, cfg, x[i])
            np.testing.assert_allclose(cap["layers.1.hook_v"][i], mems[1], atol=1e-5)
    assert nl.load(tmp_path / "none").delays(0).max() == 0


def test_load_errors(snn_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(snn_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["layer_sizes"] = [7, 3]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="shape"):
        nl.load(bad)
    cfg["layer_sizes"] = [6, 3]
    cfg["delays"] = "sometimes"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="delays must be"):
        nl.load(bad)
    cfg["delays"] = "learned"
    cfg["mystery"] = 1
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="mystery"):
        nl.load(bad)
    del cfg["mystery"]
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(LoadError, match="corrupt"):
        nl.load(bad)


def test_the_op_registry_knows_the_snn_ops():
    names = set(engine_ops.ops_for("snn"))
    assert {"prune", "scale", "set", "prune_synapses", "delay_zero", "delay_quantize",
            "delay_shuffle", "delay_jitter", "delay_blur"} <= names
    assert not names & {"adjust", "gate", "topk", "wmask"}
    assert "delay_zero" not in engine_ops.ops_for("lm")
