"""The CLI on spiking-network folders: info, capture, run, compare, eval, export (+ .npz), and
one line with exit 2 on bad input. Numbers are checked against a plain forward of the network
written here (not the engine's classify)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from neurolens.cli import main
from neurolens.engine.snn.network import SNNConfig, SpikingNet, load_network, save_network

N_IN, T = 4, 12


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def snn(tmp_path_factory):
    """A small trained-looking network (scaled weights, non-trivial batch norm) and a labelled
    sample file."""
    d = tmp_path_factory.mktemp("snn")
    torch.manual_seed(0)
    net = SpikingNet(SNNConfig(n_in=N_IN, layer_sizes=[6, 3], kernel_size=5, tau=1.5,
                               class_names=["a", "b", "c"]))
    net.init_delays(torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.projections():
            p.weight.mul_(3.0)
        net.layers[0].bn.bias.uniform_(0.0, 0.6)
    net.round_delays()
    folder = save_network(net.eval(), d / "net")
    rng = np.random.default_rng(0)
    x = (rng.random((20, T, N_IN)) < 0.4).astype(np.uint8)
    y = rng.integers(0, 3, 20).astype(np.int64)
    save_file({"spikes": x, "labels": y}, str(d / "s.safetensors"))
    return folder, d / "s.safetensors", x, y


def plain_predictions(folder, x, edit=None) -> np.ndarray:
    """The network's forward written out: per layer conv1d with one-hot kernels, batch norm,
    LIF loop; prediction = argmax of the summed softmax of the readout membrane."""
    net = load_network(folder)
    h = torch.from_numpy(x.astype(np.float32))
    with torch.no_grad():
        for l, block in enumerate(net.layers):
            p = block.proj
            w, dl = p.weight.clone(), p.delay.round().long()
            if edit is not None:
                w, dl = edit(l, w, dl)
            k = torch.zeros(p.n_out, p.n_in, p.kernel_size)
            for j in range(p.n_out):
                for i in range(p.n_in):
                    k[j, i, p.kernel_size - 1 - dl[j, i]] = w[j, i]
            z = torch.nn.functional.conv1d(
                torch.nn.functional.pad(h.transpose(1, 2), (p.kernel_size - 1,
                                                            (p.kernel_size - 1) // 2)), k)
            z = z.transpose(1, 2)
            if block.bn is not None:
                bn = block.bn
                z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight \
                    + bn.bias
            v = torch.zeros(z.shape[0], z.shape[2])
            hs, ss = [], []
            for t in range(z.shape[1]):
                hh = v * (1 - 1 / 1.5) + z[:, t]
                hs.append(hh)
                s = (hh >= 1.0).float()
                ss.append(s)
                v = hh if block.readout else hh * (1 - s)
            h = torch.stack(hs if block.readout else ss, 1)
    return torch.softmax(h, -1).sum(1).argmax(1).numpy()


def test_info(capsys, snn):
    folder = snn[0]
    code, out, _ = run(capsys, "info", "-m", folder, "--json")
    assert code == 0
    d = json.loads(out)
    assert d["kind"] == "snn" and d["n_layers"] == 2
    assert d["sites"] == {"layers.0.hook_spikes": 6, "layers.0.hook_v": 6, "layers.1.hook_v": 3}


def test_run_classifies_the_sample_file(capsys, snn):
    folder, samples, x, y = snn
    code, out, _ = run(capsys, "run", "-m", folder, "--samples", samples, "--json")
    assert code == 0
    d = json.loads(out)
    want = plain_predictions(folder, x)
    assert d["predictions"] == want.tolist()
    assert d["labels"] == y.tolist()
    assert d["accuracy"] == pytest.approx(float((want == y).mean()))
    code, out, _ = run(capsys, "run", "-m", folder, "--samples", samples, "--limit", 3)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("sample    0:") and len([x for x in lines if
                                                        x.startswith("sample")]) == 3
    assert "on 3 samples" in out


def test_compare_and_eval_match_a_plain_forward_of_the_edit(capsys, snn, tmp_path):
    folder, samples, x, y = snn
    e = tmp_path / "e.json"
    e.write_text(json.dumps({"format": "neurolens.edits/1", "edits": [
        {"op": "delay_zero", "site": "layers.0.synapses"},
        {"op": "prune_synapses", "site": "layers.1.synapses", "synapses": [[0, 2]]}]}))

    def edit(l, w, d):
        if l == 0:
            d = torch.zeros_like(d)
        else:
            w[0, 2] = 0.0
        return w, d
    before, after = plain_predictions(folder, x), plain_predictions(folder, x, edit)
    code, out, _ = run(capsys, "compare", "-m", folder, "--samples", samples, "--edits", e,
                       "--json")
    assert code == 0
    d = json.loads(out)
    assert d["n_changed"] == int((before != after).sum())
    assert d["accuracy_before"] == pytest.approx(float((before == y).mean()))
    assert d["accuracy_after"] == pytest.approx(float((after == y).mean()))
    for k, name in enumerate("abc"):
        m = y == k
        assert d["per_class"][name]["after"] == pytest.approx(float((after[m] == k).mean()))
    code, out, _ = run(capsys, "eval", "-m", folder, "--samples", samples, "--edits", e,
                       "--json")
    assert code == 0
    assert json.loads(out)["accuracy_after"] == pytest.approx(float((after == y).mean()))
    code, out, _ = run(capsys, "compare", "-m", folder, "--samples", samples, "--edits", e)
    assert code == 0 and "predictions changed" in out and "\nall " in out


def test_capture_writes_time_by_neuron_rows(capsys, snn, tmp_path):
    folder, samples, x, _ = snn
    out_file = tmp_path / "c.safetensors"
    code, out, _ = run(capsys, "capture", "-m", folder, "--samples", samples, "--limit", 5,
                       "--out", out_file, "--json")
    assert code == 0
    d = json.loads(out)
    assert d["sites"] == ["layers.0.hook_spikes"] and d["samples"] == 5
    with safe_open(str(out_file), "numpy") as f:
        a = f.get_tensor("layers.0.hook_spikes/4")
    assert a.shape == (T + 2, 6)        # K = 5: two bins longer than the input
    assert set(np.unique(a)) <= {0.0, 1.0}


def test_export_folder_and_npz(capsys, snn, tmp_path):
    folder, samples, x, _ = snn
    e = tmp_path / "e.json"
    e.write_text(json.dumps({"format": "neurolens.edits/1", "edits": [
        {"op": "delay_quantize", "site": "layers.*.synapses", "step": 2}]}))
    code, out, _ = run(capsys, "export", "-m", folder, "--edits", e, "--out", tmp_path / "o",
                       "--npz", tmp_path / "o.npz", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["npz"].endswith("o.npz") and not d["sidecar"]
    from neurolens.engine.snn import reference as ref
    p = ref.load(tmp_path / "o.npz")
    assert (p["layers.0.delay"] % 2 == 0).all()

    def quantize(l, w, dl):
        q = torch.floor(dl / 2 + 0.5).long() * 2
        return w, torch.where(q > 4, q - 2, q)
    want = plain_predictions(folder, x, quantize)
    assert (ref.forward(p, x)[0] == want).all()
    assert (plain_predictions(tmp_path / "o", x) == want).all()


@pytest.mark.parametrize("case", ["channels", "empty", "negative_step", "prompt", "none",
                                  "limit", "lm_samples"])
def test_bad_input_is_one_line_exit_2(capsys, snn, tmp_path, case, tiny_dirs):
    folder, samples, *_ = snn
    if case == "channels":
        f = tmp_path / "w.safetensors"
        save_file({"spikes": np.zeros((2, T, N_IN + 1), np.uint8)}, str(f))
        argv, want = ["run", "-m", folder, "--samples", f], "5 channels, this network takes 4"
    elif case == "empty":
        f = tmp_path / "e.safetensors"
        save_file({"spikes": np.zeros((0, T, N_IN), np.uint8)}, str(f))
        argv, want = ["eval", "-m", folder, "--samples", f], "empty sample set"
    elif case == "negative_step":
        e = tmp_path / "n.json"
        e.write_text(json.dumps({"format": "neurolens.edits/1", "edits": [
            {"op": "delay_quantize", "site": "layers.*.synapses", "step": -2}]}))
        argv = ["compare", "-m", folder, "--samples", samples, "--edits", e]
        want = "edits[0].step: expected an integer >= 1"
    elif case == "prompt":
        argv, want = ["run", "-m", folder, "--prompt", "x"], "runs on samples, not prompts"
    elif case == "none":
        argv, want = ["run", "-m", folder], "no samples: give --samples FILE"
    elif case == "limit":
        argv, want = ["run", "-m", folder, "--samples", samples, "--limit", 0], "--limit"
    else:
        argv = ["run", "-m", tiny_dirs["gpt2"], "--samples", samples]
        want = "--samples is for spiking networks"
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and want in lines[0], err
