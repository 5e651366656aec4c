"""The shipped demo spiking networks (trained by training/train_snn.py on the synthetic
temporal-motif task) meet their targets on the held-out split, and the training script runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.evals import spike_motifs as sm
from neurolens.resources import model_path

DEMO = model_path("demo-snn")
RUNS = model_path("demo-snn-runs")
shipped = pytest.mark.skipif(not (DEMO / "config.json").is_file(),
                             reason="the demo SNN is not trained yet")


@pytest.fixture(scope="module")
def heldout():
    torch.set_num_threads(1)
    return nl.load(DEMO).samples(DEMO / "samples" / "heldout.safetensors")


@shipped
def test_shipped_sample_sets_are_the_tasks_splits(heldout):
    x, y = sm.DEMO_TASK.sample(sm.HELDOUT_SIZE, seed=sm.HELDOUT_SEED)
    assert np.array_equal(heldout.spikes, x) and np.array_equal(heldout.labels, y)
    probe = nl.load(DEMO).samples(DEMO / "samples" / "probe.safetensors")
    assert len(probe) == sm.PROBE_SIZE


@pytest.mark.slow      # 12 networks on 2,048 samples each (about 10 s)
@shipped
def test_shipped_variants_meet_their_targets(heldout):
    info = json.loads((DEMO / "training.json").read_text())
    runs = {(r["variant"], r["seed"]): r["heldout"] for r in info["runs"]}
    acc = {}
    for variant, folder in (("learned", "demo-snn"), ("fixed", "demo-snn-fixed"),
                            ("none", "demo-snn-nodelay")):
        m = nl.load(model_path(folder))
        assert m.kind == "snn" and m.cfg.delays == variant
        acc[variant] = m.classify(heldout).accuracy
        assert acc[variant] == pytest.approx(runs[(variant, 0)], abs=1e-3)
    # every seed's weights are shipped too: recompute the means over the 3 seeds
    mean = {}
    for variant in ("learned", "fixed", "none"):
        accs = [nl.load(RUNS / f"{variant}-s{s}").classify(heldout).accuracy for s in (0, 1, 2)]
        for s, a in enumerate(accs):
            assert a == pytest.approx(runs[(variant, s)], abs=1e-3)
        mean[variant] = float(np.mean(accs))
    assert mean["learned"] >= 0.90
    assert mean["none"] <= 0.35
    assert mean["none"] + 0.10 <= mean["fixed"] <= mean["learned"] - 0.05
    assert info["meets_targets"] is True
    assert info["train_seconds_total"] <= 45 * 60


@pytest.mark.slow      # trains (a tiny configuration, a few seconds)
def test_training_script_runs_tiny(tmp_path):
    from training.train_snn import main
    assert main(["--tiny", "--seeds", "0", "--out", str(tmp_path)]) == 0
    info = json.loads((tmp_path / "demo-snn" / "training.json").read_text())
    assert {r["variant"] for r in info["runs"]} == {"learned", "fixed", "none"}
    m = nl.load(tmp_path / "demo-snn")
    assert m.kind == "snn" and m.cfg.delays == "learned"
    out = m.classify(tmp_path / "demo-snn" / "samples" / "heldout.safetensors")
    assert out.accuracy == pytest.approx(info["runs"][0]["heldout"], abs=1e-2)
    assert nl.load(tmp_path / "demo-snn-nodelay").cfg.delays == "none"
