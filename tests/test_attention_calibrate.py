"""Calibrated attention top-k (``attn_topk`` with ``calibrate``): the fitted quantile offsets
against a plain numpy / Python reference on synthetic skewed scores (per layer and per head),
the offsets applied by the engine (masked path, per head, and the sparse decode step) against
counts by hand, the fit on a tiny model (layer 0 from its hand-read scores, every layer's
realised count back at k), the spec's checks and the sidecar round trip."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.engine.attention.calibrate import calibrate, fit_rows, query_rows
from neurolens.engine.attention.ops import stat_keep
from neurolens.errors import InputError, SpecError
from neurolens.spec.head_edits import AttnTopK

FRAC, MIN_CTX = 1 / 8, 16


def synthetic(seed=0, heads=3, q=120):
    """Causal scores [heads, q, q] (-inf above the diagonal), skewed differently per head."""
    rng = np.random.default_rng(seed)
    s = np.stack([rng.exponential(1.0, (q, q)), rng.gumbel(0, 2.0, (q, q)),
                  -rng.exponential(0.5, (q, q))][:heads])
    return np.where(np.tril(np.ones((q, q), bool))[None], s, -np.inf)


def count_by_hand(row, k, offset):
    """Kept keys of one query's visible scores under the rule with an offset, in plain Python."""
    n = len(row)
    mean = sum(row) / n
    std = (sum((x - mean) ** 2 for x in row) / n) ** 0.5
    th = mean + std * (NormalDist().inv_cdf(1 - k / n) + offset)
    top = max(row)
    return sum(1 for x in row if x > th or x >= top)


def reference_fit(rows, grid):
    """The grid offset whose mean count by hand is nearest the mean k (rows: (scores, k))."""
    target = np.mean([k for _, k in rows])
    counts = np.array([[count_by_hand(r, k, d) for r, k in rows] for d in grid]).mean(1)
    best = np.abs(counts - target).min()
    return target, best, counts


def hand_rows(scores, heads=None):
    out = []
    for h in range(scores.shape[0]) if heads is None else heads:
        for qi in range(scores.shape[1]):
            row = [float(x) for x in scores[h, qi, :qi + 1]]
            n = len(row)
            if n >= MIN_CTX and FRAC * n < n:
                out.append((row, FRAC * n))
    return out


def test_fit_matches_numpy_reference_per_layer_and_head():
    s = synthetic()
    rows = [query_rows(s, keep_fraction=FRAC, min_context=MIN_CTX)]
    grid = np.linspace(-1.5, 1.5, 301)
    # per layer: as near the mean k as any offset on a fine grid, and the paper's rule misses
    d = fit_rows(rows, "layer", 3)
    ref = hand_rows(s)
    target, best, counts = reference_fit(ref, grid)
    got = np.mean([count_by_hand(r, k, d) for r, k in ref])
    assert abs(got - target) <= best + 1e-9
    assert abs(got / target - 1) < 0.01
    paper = np.mean([count_by_hand(r, k, 0.0) for r, k in ref])
    assert abs(paper / target - 1) > 0.05
    # per head: each head's own offset, each as near its own mean k
    ds = fit_rows(rows, "head", 3)
    assert len(ds) == 3 and max(ds) - min(ds) > 0.1            # the heads differ
    for h in range(3):
        ref = hand_rows(s, [h])
        target, best, _ = reference_fit(ref, grid)
        got = np.mean([count_by_hand(r, k, ds[h]) for r, k in ref])
        assert abs(got - target) <= best + 1e-9, h


def test_engine_applies_offsets_per_head():
    """stat_keep with per-head offsets keeps the counts computed by hand."""
    s = synthetic(seed=1)
    off = [0.3, -0.2, 0.1]
    x = torch.tensor(np.where(np.isfinite(s), s, torch.finfo(torch.float32).min),
                     dtype=torch.float32)[None]
    vis = torch.tensor(np.isfinite(s))[None]
    n = vis.sum(-1, keepdim=True).float()
    keep = stat_keep(x, vis, n * FRAC, "statistical", torch.tensor(off).view(-1, 1, 1))
    got = keep.sum(-1)[0].numpy()
    for h in range(3):
        for qi in range(MIN_CTX - 1, s.shape[1], 7):
            row = [float(v) for v in np.float32(s[h, qi, :qi + 1])]
            assert got[h, qi] == count_by_hand(row, FRAC * len(row), off[h]), (h, qi)


DOCS = ["The quick brown fox jumps over the lazy dog; " * 3,
        "Once upon a time a cat sat on a mat and looked at a hat. " * 3]


def realised(lm, edits, docs):
    from neurolens.engine.attention import topk_summary
    from neurolens.engine.events import drain
    from neurolens.engine.runner import forward_events
    ctx: dict = {}
    drain(forward_events(lm, docs, lm.session_factory(edits, None, ctx), 8))
    return {layer: v["kept"] / v["k"] for layer, v in topk_summary(ctx).items()}


@pytest.mark.parametrize("per", ["layer", "head"])
def test_calibrate_on_a_tiny_model(per):
    lm = tiny.lm("llama")
    op = AttnTopK(keep_fraction=1 / 16, min_context=64, calibrate=per)
    with pytest.raises(InputError, match="no fitted offset for layer 0"):
        lm.logits(DOCS[:1], edits=nl.EditSet([op]))
    cal = calibrate(lm, nl.EditSet([op]), DOCS)
    assert op.z_offset is None                                  # the input is left as it was
    fitted = cal[0]
    assert set(fitted.z_offset) == {"0", "1"} and "fitted per" in fitted.note
    # layer 0 from its scores read without edits, fitted by the reference on a grid
    site = "blocks.0.attn.hook_attn_scores"
    ref = []
    for a in lm.attention(DOCS, site)[site]:
        for h in range(a.shape[0]) if per == "layer" else [1]:
            for qi in range(63, a.shape[1]):
                row = [float(x) for x in a[h, qi, :qi + 1]]
                ref.append((row, len(row) / 16))
    target, best, _ = reference_fit(ref, np.linspace(-1, 1, 201))
    d0 = fitted.z_offset["0"] if per == "layer" else fitted.z_offset["0"][1]
    got = np.mean([count_by_hand(r, k, d0) for r, k in ref])
    assert abs(got - target) <= best + 1e-6
    # every layer's realised count is back at k on the fitting texts
    for layer, ratio in realised(lm, cal, DOCS).items():
        assert abs(ratio - 1) < 0.01, (layer, ratio)


def test_spec_checks_and_sidecar_round_trip(tmp_path):
    with pytest.raises(SpecError, match="calibrate"):
        AttnTopK(k=4, calibrate="layers")
    with pytest.raises(SpecError, match="not mode 'exact'"):
        AttnTopK(k=4, mode="exact", calibrate="layer")
    with pytest.raises(SpecError, match="offsets come with calibrate"):
        AttnTopK(k=4, z_offset={"0": 0.1})
    with pytest.raises(SpecError, match="one offset per head"):
        AttnTopK(k=4, calibrate="head", z_offset={"0": 0.1})
    lm = tiny.lm("llama")
    edits = nl.EditSet([AttnTopK(keep_fraction=0.25, min_context=4, calibrate="head",
                                 z_offset={"0": [0.4, -0.3], "1": [0.0, 0.6]})])
    with pytest.raises(InputError, match="3 per-head offsets for layer 0, which has 2 query heads"):
        lm.logits(DOCS[:1], edits=nl.EditSet([AttnTopK(
            k=4, calibrate="head", z_offset={"0": [0.1, 0.2, 0.3], "1": [0.0, 0.0, 0.0]})]))
    hooked = lm.logits(DOCS, edits=edits)
    plain = lm.logits(DOCS, edits=nl.EditSet([AttnTopK(keep_fraction=0.25, min_context=4)]))
    assert max(np.abs(a - b).max() for a, b in zip(hooked, plain)) > 1e-4   # offsets bite
    edits.save(tmp_path / "e.json")
    back = nl.EditSet.load(tmp_path / "e.json")[0]
    assert back.calibrate == "head" and back.z_offset == {"0": [0.4, -0.3], "1": [0.0, 0.6]}
    rep = lm.export(edits, tmp_path / "out")
    assert rep.sidecar and not rep.baked
    for a, b in zip(nl.load(str(tmp_path / "out")).logits(DOCS), hooked):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_sparse_decode_with_per_head_offsets_equals_masked(monkeypatch):
    """Qwen2 (4 query heads sharing 2 key/value heads): the decode step's per-head thresholds."""
    from neurolens.engine.attention import decode
    from test_attention_acceptance import qwen2_gqa
    from test_attention_decode import step_logits
    monkeypatch.setattr(decode, "TRANSPOSED_AFTER", 2)
    lm = qwen2_gqa()
    edits = nl.EditSet([AttnTopK(k=4, calibrate="head", z_offset={
        "0": [0.6, -0.5, 0.0, 0.3], "1": [-0.4, 0.2, 0.7, -0.1]})])
    calls = []
    real = decode.sparse_decode
    monkeypatch.setattr(decode, "sparse_decode", lambda *a: calls.append(1) or real(*a))
    fast, s_fast = step_logits(lm, edits)
    assert calls
    monkeypatch.setattr(decode, "ENABLED", False)
    slow, s_slow = step_logits(lm, edits)
    np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
    plain, _ = step_logits(lm, nl.EditSet([AttnTopK(k=4)]))
    assert np.abs(fast - plain).max() > 1e-4                    # the offsets bite
    for layer in s_slow:
        assert s_fast[layer]["kept"] == pytest.approx(s_slow[layer]["kept"])
