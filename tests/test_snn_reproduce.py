"""``neurolens reproduce delays``: the variants' held-out accuracies and the ablations through the
edit ops, checked against the network's delays changed by hand here (no edit op involved) and
against the accuracies the training script recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurolens.cli import main
from neurolens.engine.snn.network import class_scores, load_network
from neurolens.evals import experiments
from neurolens.resources import model_path

DEMO = model_path("demo-snn")
pytestmark = pytest.mark.skipif(not (DEMO / "samples" / "heldout.safetensors").is_file(),
                                reason="no demo SNN")
LIMIT = 256


@pytest.fixture(scope="module")
def result():
    from neurolens.engine.snn.model import load_snn
    exp = experiments.get("delays")
    assert exp.kind == "snn" and exp.default_model() == DEMO
    return exp.run(load_snn(DEMO), limit=LIMIT, log=lambda m: None)


def heldout():
    from neurolens.engine.snn.data import load_samples
    s = load_samples(DEMO / "samples" / "heldout.safetensors")
    return torch.from_numpy(s.spikes[:LIMIT]), s.labels[:LIMIT]


def accuracy_with(delay_fn=None, folder=DEMO) -> float:
    """The network's accuracy with every layer's whole-bin delays replaced by
    ``delay_fn(d, max_delay)`` (set on the parameters directly)."""
    net = load_network(folder)
    x, y = heldout()
    with torch.no_grad():
        if delay_fn is not None:
            for p in net.projections():
                p.delay.copy_(delay_fn(p.delay.round(), p.max_delay).float())
        pred = class_scores(net(x)).argmax(1).numpy()
    return float((pred == y).mean())


def row(result, name):
    return next(r for r in result["ablations"] if r["name"] == name)


def test_ablations_equal_the_delays_changed_by_hand(result):
    assert result["heldout"]["n"] == LIMIT
    assert result["baseline"]["accuracy"] == pytest.approx(accuracy_with(), abs=1e-4)
    zero = accuracy_with(lambda d, top: torch.zeros_like(d))
    assert row(result, "delays zero")["accuracy"] == pytest.approx(zero, abs=1e-4)

    def quantize(step):
        def f(d, top):
            q = torch.floor(d / step + 0.5) * step       # nearest multiple, ties up
            return torch.where(q > top, q - step, q)
        return f
    for step in (2, 4):
        r = row(result, f"quantized, step {step}")
        assert r["accuracy"] == pytest.approx(accuracy_with(quantize(step)), abs=1e-4)
        assert r["relative"] == pytest.approx(r["accuracy"] / result["baseline"]["accuracy"],
                                              abs=1e-3)

    def shuffle(d, top):     # the op's seeded permutation of the layer's delays, seed 0
        perm = np.random.default_rng(0).permutation(d.numel())
        return d.reshape(-1)[torch.from_numpy(perm)].reshape(d.shape)
    assert row(result, "shuffled within each layer")["accuracy"] == pytest.approx(
        accuracy_with(shuffle), abs=1e-4)
    z = row(result, "delays zero")
    assert z["meets_target"] == (z["accuracy"] <= 0.35)
    q2 = row(result, "quantized, step 2")
    assert q2["meets_target"] == (q2["relative"] >= 0.95)
    assert set(z["per_class"]) == {f"motif{k}" for k in range(8)}


def test_variants_equal_the_training_record(result):
    rec = json.loads((DEMO / "training.json").read_text())
    v = result["variants"]
    assert set(v) == {"learned", "fixed", "none"}
    for var in v:
        runs = v[var]["runs"]
        assert set(runs) == {"s0", "s1", "s2"}
        assert v[var]["shipped"] == runs["s0"]        # the shipped folder is seed 0
        assert v[var]["mean"] == pytest.approx(np.mean(list(runs.values())), abs=1e-4)
    # on the whole held-out split the training script's numbers come back (here: the first
    # 256 samples, so only roughly)
    assert v["learned"]["mean"] > 0.85 and v["none"]["mean"] < 0.3
    assert rec["mean_heldout"]["learned"] > 0.9
    assert result["meets_targets"] == all(result["targets_met"].values())


def test_cli_json_and_table(capsys):
    code = main(["reproduce", "delays", "--json", "--limit", "64", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["experiment"] == "delays" and isinstance(d["meets_targets"], bool)
    assert d["paper"]["learned"] == 0.9507
    assert [r["name"] for r in d["ablations"]] == [
        "delays zero", "shuffled within each layer", "quantized, step 2", "quantized, step 4",
        "quantized, step 2, grid per neuron", "quantized, step 4, grid per neuron",
        "jittered +-1 bin", "jittered +-3 bins"]
    code = main(["reproduce", "delays", "--limit", "64", "--quiet"])
    out, _ = capsys.readouterr()
    assert code == 0 and "95.07%" in out and "quantized, step 2" in out


def test_an_lm_is_refused(capsys):
    code = main(["reproduce", "delays", "-m", str(model_path("demo-lm")), "--limit", "4"])
    _, err = capsys.readouterr()
    if not (model_path("demo-lm") / "config.json").is_file():
        pytest.skip("no demo LM")
    assert code == 2 and "needs a spiking network" in err
