"""Paper methods on tiny models with planted structure; edit ops against hand-computed values."""

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.engine.hooks import RunState
from neurolens.engine.method_ops import AdjustHandler
from neurolens.methods import key_space, neuron_adjust, neurostrike, statistical_topk
from neurolens.methods.common import skill_texts

PLANTED = [5, 17, 40]
FORGET = [f"Z{c}Z{c}ZZ {w}" for c, w in zip("abcdefghij", "one two three four five six seven "
                                              "eight nine ten".split())]
RETAIN = [f"{c}{c} plain {w} text" for c, w in zip("abcdefghij", "red blue green gold pink "
                                                   "gray cyan teal navy lime".split())]


def planted_llama():
    """Layer-0 gate neurons PLANTED fire (large positive) only on the token 'Z'."""
    lm = tiny.lm("llama", seed=1)
    z = lm.tokenizer.convert_tokens_to_ids("Z")
    emb = lm.hf.model.embed_tokens.weight
    with torch.no_grad():
        v = torch.zeros(emb.shape[1])
        v[3] = 1.0
        emb[z] = 0.0
        emb[z, 3] = 8.0                      # token Z points along a private direction
        emb[:, 3][torch.arange(emb.shape[0]) != z] = 0.0
        g = lm.hf.model.layers[0].mlp.gate_proj.weight
        for j in PLANTED:
            g[j] = 0.0
            g[j, 3] = 6.0
        u = lm.hf.model.layers[0].mlp.up_proj.weight
        for j in PLANTED:
            u[j, 3] = 6.0
    return lm


def test_neuron_adjust_recovers_planted_neurons():
    lm = planted_llama()
    edits, rep = neuron_adjust.fit(lm, FORGET, RETAIN, p=0.03)
    assert rep.n_total == 2 * 64 and rep.n_selected == round(0.03 * 128)
    chosen = {(s, i) for s, i, _ in rep.top[:rep.n_selected]}
    assert {("blocks.0.mlp.hook_pre", j) for j in PLANTED} <= chosen
    op = edits[0]
    assert op.op == "adjust" and op.site == "blocks.0.mlp.hook_pre"
    # the adjust edit pulls the planted neurons towards their retain distribution
    base = lm.capture(FORGET, ["blocks.0.mlp.hook_pre"])["blocks.0.mlp.hook_pre"]
    ed = lm.capture(FORGET, ["blocks.0.mlp.hook_pre"], edits=edits)["blocks.0.mlp.hook_pre"]
    b = np.concatenate(base)[:, PLANTED].max()
    e = np.concatenate(ed)[:, PLANTED].max()
    assert b > 5 and e < b / 2


def test_neuron_adjust_probes_answers_where_the_skill_is_exercised():
    """The planted neurons fire only on 'Z', which the forget rows write in their answers:
    probing the prompts alone misses them, probing the skill's texts (prompt + answer) finds
    them."""
    lm = planted_llama()
    rows = [{"prompt": f"{c}{c} ask {w} =", "answer": f" Z{c}Z{c}ZZ"}
            for c, w in zip("abcdefghij", "one two three four five six seven eight nine "
                                          "ten".split())]
    texts = skill_texts(rows)
    assert texts[0] == "aa ask one = ZaZaZZ"
    assert skill_texts(["as is"]) == ["as is"]
    planted = {("blocks.0.mlp.hook_pre", j) for j in PLANTED}
    for probe, found in ((skill_texts([{"prompt": r["prompt"]} for r in rows]),
                          False), (texts, True)):
        _, rep = neuron_adjust.fit(lm, probe, RETAIN, p=0.03)
        chosen = {(s, i) for s, i, _ in rep.top[:rep.n_selected]}
        assert (planted <= chosen) is found
        assert (planted & chosen == set()) is not found


def test_adjust_op_matches_hand_computation():
    mf, sf, mr, sr = np.array([2.0, 0.0]), np.array([0.5, 1.0]), np.array([0.0, 0.0]), \
        np.array([1.0, 1.0])
    op = nl.Adjust("blocks.0.mlp.hook_pre", [1, 3], mf, sf, mr, sr, seed=7)
    h = AdjustHandler(op, None, {})
    x = torch.tensor([[[9.0, 2.0, 9.0, 0.3], [9.0, -1.0, 9.0, 5.0]]])  # [1, 2, 4]
    st = RunState(batch=1, seq=2)
    out = h(x.clone(), st)
    # reproduce the per-element draws
    gen = torch.Generator().manual_seed(7)
    u = torch.rand((1, 2, 2), generator=gen)
    cur = torch.tensor([[[2.0, 0.3], [-1.0, 5.0]]])
    want = cur.clone()
    for t in range(2):
        for k in range(2):
            xv = float(cur[0, t, k])
            pf = np.exp(-0.5 * ((xv - mf[k]) / sf[k]) ** 2) / sf[k]
            pr = np.exp(-0.5 * ((xv - mr[k]) / sr[k]) ** 2) / sr[k]
            if pf >= pr and float(u[0, t, k]) < pf / (pf + pr):
                want[0, t, k] = mr[k] - sr[k] / sf[k] * (xv - mf[k])
    np.testing.assert_allclose(out[..., [1, 3]].numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    assert out[0, 0, 1] == pytest.approx(0.0, abs=1e-6)  # x == mean_f: p = 1, maps onto mean_r
    np.testing.assert_array_equal(out[..., [0, 2]].numpy(), 9.0)   # other neurons untouched


def test_key_space_cube_math():
    a = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0], [1.0, 1.0, 8.0]])
    mu, s, k = key_space.fit_cube(a)
    np.testing.assert_allclose(mu, [1.0, 1.0, 6.0])
    np.testing.assert_allclose(s, [1.0, 0.0, np.sqrt(3.0)], rtol=1e-6)
    assert k == pytest.approx(max(1.0, 2.0 / np.sqrt(3.0)))   # constant column counts as 0
    assert key_space.inside(a, mu, s, k, 1.0).all()
    assert not key_space.inside(np.array([1.0, 1.5, 6.0]), mu, s, k, 1.0)  # moved a constant dim
    assert not key_space.inside(a * 3, mu, s, k, 1.0).any()


def test_key_space_warns_when_one_prompt_sets_k_star():
    """k* can be at most (n - 1) / sqrt(n); it reaches that when one probe point is alone in a
    dimension (sparse ReLU activations do this), and the report then says so."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(50, 8))
    _, _, k = key_space.fit_cube(dense)
    rep = key_space.KeySpaceReport("blocks.0.mlp.hook_post", k, 1.0, 50, 1.0)
    assert rep.k_star_limit == pytest.approx(49 / np.sqrt(50))
    assert k < 0.7 * rep.k_star_limit and rep.warning is None and "warning" not in rep.to_json()
    sparse = np.maximum(dense, 0.0)
    sparse[:, 0] = 0.0
    sparse[7, 0] = 3.0                          # one prompt alone in dimension 0
    _, _, k = key_space.fit_cube(sparse)
    rep = key_space.KeySpaceReport("blocks.0.mlp.hook_post", k, 1.0, 50, 1.0)
    assert k == pytest.approx(rep.k_star_limit)
    assert "largest value 50 probe prompts allow" in rep.to_json()["warning"]


def test_key_space_gate_abstains_on_the_skill_only():
    lm = planted_llama()
    edits, rep = key_space.fit(lm, FORGET, alpha=1.0, layer=-1)
    assert rep.site == "blocks.1.mlp.hook_post" and rep.probe_inside == 1.0
    outs = lm.generate(FORGET + RETAIN, edits=edits, max_new_tokens=4)
    for o in outs[:len(FORGET)]:
        assert o.abstained and o.text == key_space.REFUSAL
    assert not any(o.abstained for o in outs[len(FORGET):])
    base = lm.generate(RETAIN, max_new_tokens=4)
    assert [o.token_ids for o in base] == [o.token_ids for o in outs[len(FORGET):]]
    # teacher-forced scoring: abstained items count as wrong
    res = lm.score_continuations(FORGET[:2] + RETAIN[:2], [" x"] * 4, edits=edits)
    assert [r["abstained"] for r in res] == [True, True, False, False]
    assert res[0]["correct"] == 0


WORDS = "red blue green gold pink gray cyan teal navy lime one two six ten big old new hot".split()
PAIRED_H = [f"{a} Z {b} Z" for a in WORDS[:8] for b in WORDS[8:13]]   # harmful: contain Z
PAIRED_B = [f"{a} q {b} q" for a in WORDS[:8] for b in WORDS[8:13]]   # benign twins


def test_neurostrike_finds_planted_safety_neurons(tmp_path):
    from transformers import AutoModelForCausalLM
    lm = planted_llama()
    found, acc = neurostrike.find_safety_neurons(lm, PAIRED_H, PAIRED_B)
    assert set(PLANTED) <= set(found["blocks.0.mlp.hook_pre"])
    assert acc["blocks.0.mlp.hook_pre"] == 1.0
    assert len(found["blocks.0.mlp.hook_pre"]) <= 8      # a handful, not the whole layer
    edits, rep = neurostrike.fit(lm, PAIRED_H, PAIRED_B, layers_fraction=0.5)
    assert all(op.site.startswith("blocks.0.") for op in edits)
    assert rep.n_selected >= len(PLANTED) and rep.n_total == 2 * 64
    # bakeable: the exported folder, loaded by plain transformers (no neurolens, no hooks),
    # gives the logits of the hooked edited model
    assert all(op.op == "prune" for op in edits)
    report = lm.export(edits, tmp_path / "out")
    assert report.sidecar == [] and not (tmp_path / "out" / "neurolens_edits.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    prompts = PAIRED_H[:3] + PAIRED_B[:3]
    hooked, base = lm.logits(prompts, edits=edits), lm.logits(prompts)
    for p, a, _ in zip(prompts, hooked, base):
        with torch.no_grad():
            theirs = plain(**lm.encode([p])).logits[0].numpy()
        np.testing.assert_allclose(theirs, a, atol=1e-5, rtol=0)
    assert max(np.abs(a - b).max() for a, b in zip(hooked[:3], base[:3])) > 1e-3  # it does prune
    # ...by zeroing exactly the pruned gate neurons' weights (Llama: a neuron of hook_pre is a
    # row of model.layers.{l}.mlp.gate_proj.weight) and changing nothing else
    pruned = {(int(op.site.split(".")[1]), j) for op in edits for j in op.neurons}
    assert {op.site for op in edits} == {"blocks.0.mlp.hook_pre"}
    assert {(0, j) for j in PLANTED} <= pruned
    before, after = lm.hf.state_dict(), plain.state_dict()
    for name, w in before.items():
        want = w.clone()
        for layer, j in pruned:
            if name == f"model.layers.{layer}.mlp.gate_proj.weight":
                want[j] = 0.0
        assert torch.equal(after[name], want), name
    for layer, j in pruned:
        assert (after[f"model.layers.{layer}.mlp.gate_proj.weight"][j] == 0).all()


def test_neurostrike_keeps_the_neurons_benign_answers_need():
    """Two planted groups fire on the harmful requests: PLANTED (layer 0) on 'Z', which the
    benign requests' answers also write, and REQUEST (layer 1) on 'Y', which only harmful
    requests contain. Probing the benign requests alone takes both groups for safety neurons;
    probing them with their answers (``skill_texts``) keeps PLANTED, which the benign answers
    use, and still finds REQUEST."""
    lm = planted_llama()
    request = [9, 23, 51]
    y = lm.tokenizer.convert_tokens_to_ids("Y")
    emb = lm.hf.model.embed_tokens.weight
    layers = lm.hf.model.layers
    with torch.no_grad():
        emb[:, 4] = 0.0
        emb[y] = 0.0
        emb[y, 4] = 8.0                      # token Y along a second private direction
        for layer in layers[:2]:             # read by the REQUEST neurons alone
            layer.mlp.gate_proj.weight[:, 4] = 0.0
            layer.mlp.up_proj.weight[:, 4] = 0.0
        for j in request:
            layers[1].mlp.gate_proj.weight[j] = 0.0
            layers[1].mlp.gate_proj.weight[j, 4] = 6.0
            layers[1].mlp.up_proj.weight[j, 4] = 6.0
    harmful = [f"{a} Y {b} Z" for a in WORDS[:8] for b in WORDS[8:13]]
    benign = [{"prompt": f"{a} q {b} q", "answer": " Z Z"} for a in WORDS[:8]
              for b in WORDS[8:13]]
    alone, _ = neurostrike.find_safety_neurons(lm, harmful, [r["prompt"] for r in benign])
    answered, _ = neurostrike.find_safety_neurons(lm, harmful, skill_texts(benign))
    for kind in ("hook_pre", "hook_pre_linear"):
        assert alone[f"blocks.0.mlp.{kind}"] == PLANTED
        assert alone[f"blocks.1.mlp.{kind}"] == request == answered[f"blocks.1.mlp.{kind}"]
        assert not set(PLANTED) & set(answered[f"blocks.0.mlp.{kind}"])


def test_logistic_probes_separate_planted_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 200, 10))
    y = (rng.random(200) > 0.5).astype(float)
    x[0, :, 4] += 3 * y            # module 0: feature 4 carries the label
    x[1, :, 7] -= 3 * y            # module 1: feature 7, negatively
    w = neurostrike.logistic_probes(x, y)
    assert np.argmax(w[0]) == 4 and w[0, 4] > 0
    assert np.argmin(w[1]) == 7 and w[1, 7] < 0


def test_probe_accuracy_counts_the_intercept():
    """With one harmful row in ten, the threshold lies well above the features' mean: scored
    without the probe's intercept, most benign rows above the mean would count as harmful."""
    rng = np.random.default_rng(1)
    y = (np.arange(400) % 10 == 0).astype(float)
    x = rng.normal(size=(1, 400, 3))
    x[0, :, 0] += 6 * y
    w, b = neurostrike.logistic_probes(x, y, bias=True)
    assert b[0] < -1
    acc = neurostrike.probe_accuracy(x, y, w, b)[0]
    assert acc >= 0.98
    assert neurostrike.probe_accuracy(x, y, w, np.zeros(1))[0] < 0.8


def test_statistical_topk_values_and_fraction():
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0]])
    th = statistical_topk.threshold(g, 0.2)
    from statistics import NormalDist
    want = g.mean() + g.std(unbiased=False) * NormalDist().inv_cdf(0.8)
    assert float(th) == pytest.approx(float(want), rel=1e-6)
    soft = statistical_topk.statistical_topk(g, 0.2)
    np.testing.assert_allclose(soft.numpy(), np.maximum(g.numpy() - float(want), 0), rtol=1e-6)
    hard = statistical_topk.statistical_topk(g, 0.2, "hard")
    np.testing.assert_array_equal(hard.numpy(), np.where(g.numpy() > float(want), g.numpy(), 0))
    big = torch.randn(64, 16384, generator=torch.Generator().manual_seed(0))
    frac = (statistical_topk.statistical_topk(big, 0.08, "hard") != 0).float().mean()
    assert abs(float(frac) - 0.08) < 0.005


def test_topk_edit_on_model_reports_fraction():
    lm = tiny.lm("llama")
    rep = statistical_topk.measure(lm, RETAIN, keep_fraction=0.25)
    assert set(rep.active_fraction) == {"blocks.0.mlp.hook_pre", "blocks.1.mlp.hook_pre"}
    # reference: plain hooks on the gate projections (hard-coded paths) apply the soft top-k
    # from the formula theta = mean + std * Phi^-1(1 - k) and count the active cells per token
    from statistics import NormalDist
    z = NormalDist().inv_cdf(1 - 0.25)
    per_token = {0: [], 1: []}

    def topk_hook(layer):
        def hook(mod, args, out):
            g = out.double()
            th = g.mean(-1, keepdim=True) + g.std(-1, unbiased=False, keepdim=True) * z
            per_token[layer] += (g > th).double().mean(-1).flatten().tolist()
            return (g - th).clamp_min(0).to(out.dtype)
        return hook
    hs = [lm.hf.get_submodule(f"model.layers.{l}.mlp.gate_proj").register_forward_hook(
        topk_hook(l)) for l in (0, 1)]
    try:
        for p in RETAIN:        # one prompt at a time: no padding in the reference
            with torch.no_grad():
                lm.hf(**lm.encode([p]))
    finally:
        for h in hs:
            h.remove()
    want = {f"blocks.{l}.mlp.hook_pre": float(np.mean(v)) for l, v in per_token.items()}
    for site, v in rep.active_fraction.items():
        assert v == pytest.approx(want[site], abs=1e-4), site
    # gated FFN: the gate stays dense, up and down (2 of 3 equal matmuls) skip inactive neurons
    assert rep.flops_saved == pytest.approx(2 / 3 * (1 - np.mean(list(want.values()))), abs=1e-4)
    cap = lm.capture(RETAIN[:2], ["blocks.0.mlp.hook_pre"],
                     edits=statistical_topk.edits(lm, 0.25))["blocks.0.mlp.hook_pre"]
    for c in cap:
        assert ((c > 0).mean(1) < 0.5).all() and (c >= 0).all()   # soft: (g - theta)+ >= 0
    exact = nl.EditSet([nl.TopK("blocks.0.mlp.hook_pre", 0.25, mode="exact", variant="hard")])
    c = lm.capture(RETAIN[:1], ["blocks.0.mlp.hook_pre"], edits=exact)["blocks.0.mlp.hook_pre"][0]
    assert ((c != 0).sum(1) == 16).all()


def test_method_edits_round_trip_and_export_as_sidecar(tmp_path):
    lm = planted_llama()
    na, _ = neuron_adjust.fit(lm, FORGET, RETAIN, p=0.05)
    ks, _ = key_space.fit(lm, FORGET, alpha=1.5)
    tk = statistical_topk.edits(lm, 0.1)
    ns, _ = neurostrike.fit(lm, PAIRED_H, PAIRED_B)
    allops = nl.EditSet(list(na) + list(ks) + list(tk) + list(ns))
    allops.save(tmp_path / "m.json")
    back = nl.EditSet.load(tmp_path / "m.json")
    assert [o.op for o in back] == [o.op for o in allops]
    np.testing.assert_array_equal(back[len(na)].mu, ks[0].mu)
    lm.hf.save_pretrained(tmp_path / "src")
    lm.tokenizer.save_pretrained(tmp_path / "src")
    src = nl.load(tmp_path / "src")
    rep = src.export(back, tmp_path / "out")
    assert len(rep.baked) == len(ns)                       # NeuroStrike prunes are baked
    assert len(rep.sidecar) == len(na) + 1 + 2             # adjust per layer, gate, topk x2 layers
    again = nl.load(tmp_path / "out")
    want = src.generate(FORGET[:3] + RETAIN[:3], edits=back, max_new_tokens=4)
    got = again.generate(FORGET[:3] + RETAIN[:3], max_new_tokens=4)
    assert [o.text for o in got] == [o.text for o in want]


def test_sparse_decoding_equals_topk_edit():
    from neurolens.bench import _random_gated
    from neurolens.engine.sparse import sparse_ffn
    lm = _random_gated(2, 64, 256, vocab=300)
    prompt = [5, 9, 17, 3, 8]          # token ids: the random model has no tokenizer

    def gen_ids(edits=None):
        return lm.generate(prompt, edits=edits, max_new_tokens=12, ignore_eos=True,
                           batch_size=1).token_ids
    topk = nl.EditSet([nl.TopK("blocks.*.mlp.hook_pre", 0.08)])
    want = gen_ids(topk)
    with sparse_ffn(lm, 0.08) as st:
        got = gen_ids()
    assert got == want
    assert 0.03 < st["active"] / st["total"] < 0.15
    dense = gen_ids()
    assert "forward" not in lm.hf.model.layers[0].mlp.__dict__   # restored
    assert len(dense) == 12 and dense != want


@pytest.mark.parametrize("variant", ["soft", "hard"])
def test_statistical_topk_kernel_equals_the_formula(variant):
    """The fast kernel equals the textbook formula (Welford std), in place too; also for
    non-centred rows (mean 20 x std)."""
    from neurolens.engine.method_ops import stat_topk
    g = torch.randn(300, 4096) * 2 + 0.5
    g[:50] = torch.randn(50, 4096) + 20.0             # rows far from zero mean
    z = 1.4
    mean, std = g.mean(-1, keepdim=True), g.std(-1, keepdim=True, unbiased=False)
    th = mean + std * z
    torch.testing.assert_close(statistical_topk.threshold(g, 1 - 0.919243340766228), th,
                               atol=1e-4, rtol=1e-5)
    want = torch.clamp_min(g - th, 0.0) if variant == "soft" else g * (g > th)
    clear = (g - th).abs() > 1e-3              # cells not within rounding of the threshold
    got = statistical_topk.statistical_topk(g, 1 - 0.919243340766228, variant)
    torch.testing.assert_close(got[clear], want[clear], atol=2e-4, rtol=1e-5)
    inplace = g.clone()
    stat_topk(inplace, z, variant, out=inplace)
    torch.testing.assert_close(inplace[clear], want[clear], atol=2e-4, rtol=1e-5)
    assert 0.05 < float((want > 0).float().mean()) < 0.12


def test_key_space_layer_choice_on_probe_data(monkeypatch):
    """The layer whose cube holds the held-back forget prompts and keeps the others out wins;
    a layer where the others fall inside loses; a tie goes to the later layer."""
    rng = np.random.default_rng(0)
    forget = rng.normal(0, 1, (40, 6))
    others_near = rng.normal(0, 1, (30, 6))          # same distribution: inside the cube
    others_far = others_near + 50.0                   # far away: outside
    feats = {
        "forget": {"blocks.0.mlp.hook_post": forget, "blocks.1.mlp.hook_post": forget,
                   "blocks.2.mlp.hook_post": forget},
        "others": {"blocks.0.mlp.hook_post": others_near, "blocks.1.mlp.hook_post": others_far,
                   "blocks.2.mlp.hook_post": others_far}}

    def fake_probe(lm, prompts, sites, reduce, batch_size, progress=None):
        assert reduce == "last"
        return {s: feats[prompts[0]][s] for s in sites}

    monkeypatch.setattr(key_space, "probe_reduced", fake_probe)

    class LM:
        n_layers = 3
    layer, table = key_space.select_layer(LM(), ["forget"], ["others"], alpha=2.0)
    assert [r["layer"] for r in table] == [0, 1, 2]
    assert table[0]["others_inside"] > 0.5 and table[1]["others_inside"] == 0.0
    for r in table:
        assert r["margin"] == round(r["forget_inside"] - r["others_inside"], 4)
    # the cube fitted on every other forget row holds the held-back half at alpha 2
    assert table[1]["forget_inside"] >= 0.9 and table[1]["margin"] == table[2]["margin"]
    assert layer == 2


def test_key_space_auto_falls_back_to_hook_pre_on_sparse_features(monkeypatch):
    """'auto' on a model whose hook_post vectors are sparse (one forget prompt alone in a
    dimension, in every layer) probes the dense hook_pre instead; on dense hook_post it keeps
    hook_post."""
    rng = np.random.default_rng(1)
    n_layers = 2
    forget_pre, others_pre = rng.normal(0, 1, (40, 6)), rng.normal(0, 1, (30, 6)) + 50.0
    sparse = np.maximum(rng.normal(0, 1, (40, 6)), 0.0)
    sparse[:, 0] = 0.0
    sparse[9, 0] = 4.0                 # one forget prompt alone in dimension 0
    feats = {"forget": {}, "others": {}}
    for i in range(n_layers):
        feats["forget"][f"blocks.{i}.mlp.hook_pre"] = forget_pre
        feats["others"][f"blocks.{i}.mlp.hook_pre"] = others_pre
        feats["forget"][f"blocks.{i}.mlp.hook_post"] = sparse
        feats["others"][f"blocks.{i}.mlp.hook_post"] = np.maximum(others_pre, 0.0)

    def fake_probe(lm, prompts, sites, reduce, batch_size, progress=None):
        return {s: feats[prompts[0]][s] for s in sites}

    monkeypatch.setattr(key_space, "probe_reduced", fake_probe)

    class LM:
        name_or_path, fingerprint = "fake", "0"

        def __init__(self):
            self.n_layers = n_layers

        def sites(self):
            return {s: 6 for s in feats["forget"]}
    assert key_space.k_star_at_limit(key_space.fit_cube(sparse)[2], len(sparse))
    assert not key_space.k_star_at_limit(key_space.fit_cube(forget_pre)[2], len(forget_pre))
    edits, rep = key_space.fit(LM(), ["forget"], alpha=2.0, layer="auto", keep=["others"])
    assert rep.site.endswith("mlp.hook_pre") and "hook_post k* at its limit" in rep.fallback
    assert rep.warning is None and rep.to_json()["fallback"] == rep.fallback
    assert edits[0].site == rep.site
    feats["forget"] = {s: (forget_pre if s.endswith("hook_post") else v)
                       for s, v in feats["forget"].items()}
    _, rep = key_space.fit(LM(), ["forget"], alpha=2.0, layer="auto", keep=["others"])
    assert rep.site.endswith("mlp.hook_post") and rep.fallback is None


def test_reproduce_table_prints_the_key_space_warning():
    from neurolens.evals import reproduce
    rel = {s: 1.0 for s in reproduce.SKILL_ORDER}
    rows = [{"method": "KSD", "forget": "code", "relative": dict(rel, code=0.0),
             "meets_target": False, "fit": {"warning": "k* = 14.1 is the largest value"}},
            {"method": "NA 3%", "forget": "code", "relative": rel, "meets_target": False,
             "fit": {}}]
    text = reproduce.format_table({"experiment": "unlearning", "rows": rows})
    assert "warning (KSD, forget code): k* = 14.1 is the largest value" in text
    assert text.count("warning") == 1 and text.count("MISSED") == 2
