"""Head edits and attention top-k: a pruned head equals zeroing its output-projection columns by
hand (rows of GPT-2's Conv1D), the export bakes prune / scale / mean-ablation into plain
transformers weights, conditional edits come back through ``nl.load``, and attention top-k keeps
the count computed by hand from the scores."""

from statistics import NormalDist

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.spec.head_edits import AttnTopK, MeanAblateHead, PruneHead, ScaleHead

PROMPTS = ["Compute: 47+38=", "Story: Mia has a kite and a dog."]
# output projections written out by hand (their input is the heads' outputs, head-major)
O_PROJ = {"gpt2": "transformer.h.{l}.attn.c_proj", "llama": "model.layers.{l}.self_attn.o_proj"}
D_HEAD = 16           # hidden 32, 2 heads


def _cols(head):
    return list(range(head * D_HEAD, (head + 1) * D_HEAD))


def _zero_head_by_hand(hf, arch, layer, head, factor=0.0):
    w = hf.get_submodule(O_PROJ[arch].format(l=layer)).weight
    with torch.no_grad():
        if arch == "gpt2":            # Conv1D [in, out]: the inputs are rows
            w[_cols(head), :] *= factor
        else:
            w[:, _cols(head)] *= factor


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prune_head_equals_zeroed_o_proj_by_hand(arch):
    lm = tiny.lm(arch)
    edits = nl.EditSet([PruneHead("blocks.1.attn.hook_z", [1])])
    ours = lm.logits(PROMPTS, edits=edits)
    base = lm.logits(PROMPTS)
    assert max(np.abs(a - b).max() for a, b in zip(ours, base)) > 1e-4
    _zero_head_by_hand(lm.hf, arch, 1, 1)
    for a, b in zip(ours, lm.logits(PROMPTS)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _plain_logits(path, lm, prompts):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    out = []
    for p in prompts:
        with torch.no_grad():
            out.append(hf(input_ids=lm.encode([p])["input_ids"]).logits[0].numpy())
    return out


def _mean_z(lm, layer, heads):
    cap = lm.capture(PROMPTS, [f"blocks.{layer}.attn.hook_z"])
    z = np.concatenate(cap[f"blocks.{layer}.attn.hook_z"], 0)
    return np.stack([z[:, _cols(h)].mean(0) for h in heads])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_export_bakes_head_edits(arch, tmp_path):
    lm = tiny.lm(arch)
    mean = _mean_z(lm, 0, [0])
    edits = nl.EditSet([PruneHead("blocks.1.attn.hook_z", [0]),
                        ScaleHead("blocks.0.attn.hook_z", [1], factor=0.5),
                        MeanAblateHead("blocks.0.attn.hook_z", [0], mean)])
    hooked = [lm.logits([p], edits=edits)[0] for p in PROMPTS]
    rep = lm.export(edits, tmp_path / "out")
    plain = _plain_logits(tmp_path / "out", lm, PROMPTS)
    if arch == "gpt2":      # c_proj has a bias: everything baked, plain transformers is exact
        assert len(rep.baked) == 3 and not rep.sidecar
        for a, b in zip(plain, hooked):
            np.testing.assert_allclose(a, b, atol=1e-5)
    else:                   # no o_proj bias: the mean ablation stays in the sidecar
        assert len(rep.baked) == 2 and len(rep.sidecar) == 1
        assert "mean_ablate_head" in rep.sidecar[0]
        back = nl.load(str(tmp_path / "out"))
        for a, b in zip(back.logits(PROMPTS), hooked):
            np.testing.assert_allclose(a, b, atol=1e-5)
    # the prune alone is bit-equal: zero columns and zero inputs give the same sums
    e1 = nl.EditSet([PruneHead("blocks.1.attn.hook_z", [0])])
    lm.export(e1, tmp_path / "p")
    for a, b in zip(_plain_logits(tmp_path / "p", lm, PROMPTS),
                    [lm.logits([p], edits=e1)[0] for p in PROMPTS]):
        np.testing.assert_array_equal(a, b)


def _eager_logits(hf, ids):
    old = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return hf(input_ids=ids).logits[0].numpy()
    finally:
        hf.set_attn_implementation(old)


def test_attn_topk_dense_when_k_at_least_n_and_exact_drops_one():
    lm = tiny.lm("llama")
    p = PROMPTS[1]
    ids = lm.encode([p])["input_ids"]
    n = ids.shape[1]
    dense = lm.logits([p], edits=nl.EditSet([AttnTopK(k=n)]))[0]
    np.testing.assert_allclose(dense, _eager_logits(lm.hf, ids), atol=1e-6)
    site = "blocks.1.attn.hook_pattern"
    # exact mode, k = n - 1: exactly one key masked for every query with n >= 2 keys
    ex = lm.attention([p], site, edits=nl.EditSet([
        AttnTopK("blocks.1.attn.hook_attn_scores", k=n - 1, mode="exact")]))[site][0]
    kept = (ex > 0).sum(-1)                                  # [heads, queries]
    visible = np.arange(1, n + 1)
    want = np.where(visible > n - 1, n - 1, visible)
    assert (kept == want[None]).all()


def test_attn_topk_keeps_hand_computed_count():
    lm = tiny.lm("gpt2")
    p = PROMPTS[1]
    scores = lm.attention([p], "blocks.0.attn.hook_attn_scores")[
        "blocks.0.attn.hook_attn_scores"][0].astype(np.float64)
    frac, min_ctx = 0.25, 8
    want = []                         # by hand: per query, over its visible keys
    for h in range(scores.shape[0]):
        row = []
        for q in range(scores.shape[1]):
            s = scores[h, q, : q + 1]
            n = len(s)
            k = frac * n
            if n < min_ctx or k >= n:
                row.append(n)
                continue
            th = s.mean() + s.std() * NormalDist().inv_cdf(1 - k / n)
            row.append(max(1, int((s > th).sum())))
        want.append(row)
    want = np.array(want)
    op = AttnTopK("blocks.0.attn.hook_attn_scores", keep_fraction=frac, min_context=min_ctx)
    site = "blocks.0.attn.hook_pattern"
    pat = lm.attention([p], site, edits=nl.EditSet([op]))[site][0]
    np.testing.assert_array_equal((pat > 0).sum(-1), want)
    assert (want[:, min_ctx:] < np.arange(min_ctx + 1, scores.shape[1] + 1)).any()  # it bites
    # the realised count reported by the run
    from neurolens.engine.attention import topk_summary
    from neurolens.engine.events import drain
    from neurolens.engine.runner import forward_events
    ctx = {}
    drain(forward_events(lm, [p], lm.session_factory(nl.EditSet([op]), None, ctx)))
    s = topk_summary(ctx)[0]
    acted = want[:, min_ctx - 1:]
    assert s["queries"] == acted.size
    assert s["kept"] == pytest.approx(acted.mean())


def test_attn_topk_sidecar_round_trip(tmp_path):
    lm = tiny.lm("gpt2")
    edits = nl.EditSet([AttnTopK(keep_fraction=0.25, min_context=4)])
    hooked = lm.logits(PROMPTS, edits=edits)
    assert lm.hf.config._attn_implementation == "sdpa"
    rep = lm.export(edits, tmp_path / "out")
    assert rep.sidecar and not rep.baked
    back = nl.load(str(tmp_path / "out"))
    for a, b in zip(back.logits(PROMPTS), hooked):
        np.testing.assert_allclose(a, b, atol=1e-6)
    edits.save(tmp_path / "e.json")
    assert nl.EditSet.load(tmp_path / "e.json")[0].keep_fraction == 0.25


def test_mean_ablation_holds_the_heads_at_their_mean():
    from neurolens.engine.attention.ops import mean_ablation
    lm = tiny.lm("llama")
    site = "blocks.0.attn.hook_z"
    op = mean_ablation(lm, site, [1], PROMPTS)
    # the mean by hand, from a plain hook on the output projection's input
    rows = []
    o = lm.hf.get_submodule(O_PROJ["llama"].format(l=0))
    h = o.register_forward_pre_hook(lambda m, a: rows.append(a[0][0, :, _cols(1)].clone()))
    for p in PROMPTS:
        with torch.no_grad():
            lm.hf(**lm.encode([p]))
    h.remove()
    want = torch.cat(rows).double().mean(0).numpy()
    np.testing.assert_allclose(op.mean[0], want, atol=1e-6)
    z = lm.capture(["Another prompt"], [site], edits=nl.EditSet([op]))[site][0]
    np.testing.assert_allclose(z[:, _cols(1)], np.broadcast_to(want, (len(z), D_HEAD)),
                               atol=1e-6)
