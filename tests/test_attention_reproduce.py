"""The attention half of ``reproduce sparsity`` on a tiny model: per-layer attended keys per query
against k = n/16 over the queries with n >= 64 (counted by hand from the captured scores), the
10% target, the calibrated rule (fitted on the probe texts) beside the paper's on the held-out
texts, the rows and the table."""

from statistics import NormalDist

import numpy as np
import pytest

import neurolens as nl
import tiny
from neurolens.evals import attention_sparsity as asp
from neurolens.spec.head_edits import AttnTopK

DOC = "The quick brown fox jumps over the lazy dog; " * 3          # 135 byte tokens


def _hand_mean_kept(lm, doc, layer):
    """By hand from the scores the layer sees (the layers below it run with the operator)."""
    site = f"blocks.{layer}.attn.hook_attn_scores"
    below = nl.EditSet([AttnTopK(f"blocks.{i}.attn.hook_attn_scores", keep_fraction=asp.FRACTION,
                                 min_context=asp.MIN_CONTEXT) for i in range(layer)])
    s = lm.attention([doc], site, edits=below)[site][0].astype(np.float64)
    kept, ks = [], []
    for h in range(s.shape[0]):
        for q in range(asp.MIN_CONTEXT - 1, s.shape[1]):
            row = s[h, q, : q + 1]
            n = len(row)
            k = n * asp.FRACTION
            th = row.mean() + row.std() * NormalDist().inv_cdf(1 - k / n)
            kept.append(max(1, int((row > th).sum())))
            ks.append(k)
    return np.mean(kept), np.mean(ks), len(kept)


def test_attention_rows_and_table(monkeypatch):
    lm = tiny.lm("llama")
    held = "Once upon a time a cat sat on a mat and looked at a hat. " * 3
    splits = []
    monkeypatch.setattr(asp, "long_texts",
                        lambda lm, split="probe": splits.append(split) or
                        ([DOC] if split == "probe" else [held]))
    base = {s: _Res(1.0) for s in asp.sk.SKILLS}
    calls = []

    def evaluate(lm, edits, limit, log):
        calls.append([op.op for op in edits])
        return {s: _Res(0.5) for s in asp.sk.SKILLS}
    res = asp.attention_sparsity(lm, base, limit=3, log=lambda m: None, evaluate=evaluate)
    assert calls == [["attn_topk"], ["attn_topk", "topk"], ["attn_topk"]]
    for layer in range(2):
        kept, k, nq = _hand_mean_kept(lm, DOC, layer)
        got = res["layers"][f"blocks.{layer}"]
        assert got["queries"] == nq
        assert abs(got["kept"] - kept) < 1e-3 and abs(got["k"] - k) < 1e-3
        assert abs(got["ratio"] - kept / k) < 1e-3
        assert abs(res["exact_layers"][f"blocks.{layer}"]["ratio"] - 1) < 0.1
    worst = max(abs(v["ratio"] - 1) for v in res["layers"].values())
    assert res["meets_target"] == (worst <= 0.10)
    # held-out: the paper's rule counted by hand there; the calibrated rule's offsets are the
    # ones fitted on the probe text, which bring the probe text's counts back to k
    assert sorted(set(splits)) == ["eval", "probe"]
    h = res["heldout"]
    cal = asp.calibrated_edits(lm, [DOC])
    assert h["z_offset"] == cal[0].z_offset and h["texts"] == 1
    for layer in range(2):
        kept, k, nq = _hand_mean_kept(lm, held, layer)
        got = h["paper"][f"blocks.{layer}"]
        assert got["queries"] == nq and abs(got["ratio"] - kept / k) < 1e-3
        assert abs(asp.measure(lm, [DOC], edits=cal)[f"blocks.{layer}"]["ratio"] - 1) < 0.01
        assert h["calibrated"][f"blocks.{layer}"]["ratio"] == pytest.approx(
            asp.measure(lm, [held], edits=cal)[f"blocks.{layer}"]["ratio"])
    assert h["meets_target_calibrated"] == (h["max_deviation_calibrated"] <= 0.10)
    assert res["rows"][0]["relative"]["code"] == 0.5
    text = "\n".join(asp.format_lines(res))
    assert "blocks.1" in text and "256 of 4,096" in text and "reaching n >= 64" in text
    assert "held-out (1 packed eval texts): paper rule vs calibrated" in text


class _Res:
    def __init__(self, v):
        self.primary = v
