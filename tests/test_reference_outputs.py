"""compare's metrics, the logit lens and every bakeable edit, checked against plain torch and
transformers on weights edited by hand (module paths written out here, not neurolens' table)."""

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import neurolens as nl
import tiny
from native_sites import plain_greedy

PROMPTS = ["Compute: 47+38=", "hi", "Story: Mia", "abc"]


def plain_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].double()


# -- compare ---------------------------------------------------------------------------------------
def _gpt2_edit(m):
    """Prune layer 0's FFN neurons 1, 5, 9 and scale layer 1's even neurons by 4, by hand
    (GPT-2's c_proj is a Conv1D: its weight rows are the FFN neurons)."""
    m.transformer.h[0].mlp.c_proj.weight[[1, 5, 9], :] = 0
    m.transformer.h[1].mlp.c_proj.weight[0::2, :] *= 4.0


def _llama_edit(m):
    m.model.layers[0].mlp.down_proj.weight[:, [1, 5, 9]] = 0
    m.model.layers[1].mlp.down_proj.weight[:, 0::2] *= 4.0


COMPARE_EDITS = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [1, 5, 9]),
                            nl.Scale("blocks.1.mlp.hook_post", list(range(0, 64, 2)),
                                     factor=4.0)])


@pytest.mark.parametrize("arch,hand", [("gpt2", _gpt2_edit), ("llama", _llama_edit)])
def test_compare_metrics_equal_plain_transformers(arch, hand):
    lm = tiny.lm(arch)
    n = 6
    cmp = lm.compare(PROMPTS, COMPARE_EDITS, max_new_tokens=n, ignore_eos=True)
    edited = copy.deepcopy(lm.hf)
    with torch.no_grad():
        hand(edited)
    divergences = []
    for p, item in zip(PROMPTS, cmp.items):
        ids = lm.tokenizer(p)["input_ids"]
        base_toks = plain_greedy(lm.hf, ids, n)
        edit_toks = plain_greedy(edited, ids, n)
        assert item.baseline.token_ids == base_toks
        assert item.edited.token_ids == edit_toks
        want_div = next((k for k, (a, b) in enumerate(zip(base_toks, edit_toks)) if a != b), None)
        assert item.first_divergence == want_div
        assert item.changed == (want_div is not None)
        divergences.append(want_div)
        # teacher-forced on prompt + baseline continuation: row s-1+k predicts baseline token k
        seq = ids + base_toks
        s = len(ids)
        lp = torch.log_softmax(plain_logits(lm.hf, seq)[s - 1:s - 1 + n], -1)
        lq = torch.log_softmax(plain_logits(edited, seq)[s - 1:s - 1 + n], -1)
        kl = (lp.exp() * (lp - lq)).sum(-1).numpy()          # KL(baseline || edited)
        tgt = torch.tensor(base_toks)
        pb = lp[torch.arange(n), tgt].exp().numpy()
        pe = lq[torch.arange(n), tgt].exp().numpy()
        assert kl.min() > 1e-5                               # the edit moves every step
        np.testing.assert_allclose(item.kl_per_token, kl, rtol=2e-3, atol=1e-8)
        np.testing.assert_allclose(item.p_base, pb, rtol=1e-5)
        np.testing.assert_allclose(item.p_edited, pe, rtol=1e-5)
        assert item.mean_kl == pytest.approx(kl.mean(), rel=2e-3)
        js = item.to_json()
        assert js["first_divergence"] == want_div
        np.testing.assert_allclose(js["kl_per_token"], kl, atol=1e-6)
    # the prompts cover both cases: some continuations diverge, at different steps
    assert len({d for d in divergences}) >= 2
    assert cmp.n_changed == sum(d is not None for d in divergences)


def test_compare_with_a_no_op_edit_is_the_control():
    lm = tiny.lm("llama")
    noop = nl.EditSet([nl.Scale("blocks.1.mlp.hook_post", [0, 3, 7], factor=1.0)])
    cmp = lm.compare(PROMPTS, noop, max_new_tokens=6, ignore_eos=True)
    for item in cmp.items:
        assert item.first_divergence is None and not item.changed
        assert item.kl_per_token == [0.0] * 6
        assert item.p_base == item.p_edited
    assert cmp.n_changed == 0 and cmp.mean_kl == 0.0


# -- logit lens ------------------------------------------------------------------------------------
def _lens_gpt2(m, layer, n):
    d = m.transformer.h[layer].mlp.c_proj.weight[n, :]            # Conv1D: row n
    d = (d - d.mean()) * m.transformer.ln_f.weight                # LayerNorm: centre, scale
    return m.lm_head.weight @ d


def _lens_neox(m, layer, n):
    d = m.gpt_neox.layers[layer].mlp.dense_4h_to_h.weight[:, n]
    d = (d - d.mean()) * m.gpt_neox.final_layer_norm.weight
    return m.lm_head.weight @ d          # (embed_out before transformers 5)


def _lens_opt(m, layer, n):
    d = m.model.decoder.layers[layer].fc2.weight[:, n]
    d = (d - d.mean()) * m.model.decoder.final_layer_norm.weight
    return m.lm_head.weight @ d


def _lens_rms(m, layer, n):
    d = m.model.layers[layer].mlp.down_proj.weight[:, n] * m.model.norm.weight   # RMSNorm
    return m.lm_head.weight @ d


def _lens_gemma(m, layer, n):
    d = m.model.layers[layer].mlp.down_proj.weight[:, n] * (1.0 + m.model.norm.weight)
    return m.lm_head.weight @ d


LENS = {"gpt2": _lens_gpt2, "gpt_neox": _lens_neox, "opt": _lens_opt, "llama": _lens_rms,
        "phi3": _lens_rms, "qwen2": _lens_rms, "gemma": _lens_gemma, "gemma2": _lens_gemma}


@pytest.mark.parametrize("arch", list(LENS))
def test_logit_lens_follows_the_transformerlens_convention(arch):
    lm = tiny.lm(arch)
    if arch in ("gemma", "gemma2"):     # random init leaves Gemma's norm near 0 (= scale 1)
        with torch.no_grad():
            lm.hf.model.norm.weight.normal_(0.0, 0.5)
    for layer, n in ((0, 3), (1, 17)):
        with torch.no_grad():
            scores = LENS[arch](lm.hf, layer, n).double()
        top = torch.topk(scores, 10)
        bot = torch.topk(-scores, 10)
        got = lm.logit_lens(layer, n)
        assert [t for t, _ in got["promote"]] == [lm.tokenizer.decode([int(i)])
                                                  for i in top.indices]
        assert [t for t, _ in got["suppress"]] == [lm.tokenizer.decode([int(i)])
                                                   for i in bot.indices]
        np.testing.assert_allclose([v for _, v in got["promote"]], top.values.numpy(), atol=1e-5)
        np.testing.assert_allclose([v for _, v in got["suppress"]], -bot.values.numpy(),
                                   atol=1e-5)


# -- every bakeable op, edited by hand ---------------------------------------------------------
def _h(m):
    return m.transformer.h


def _L(m):
    return m.model.layers


def _gpt2_set(m):    # set neuron 20 of layer 0 to 0.7: its contribution moves into the bias
    c = _h(m)[0].mlp.c_proj
    c.bias += 0.7 * c.weight[20, :]
    c.weight[20, :] = 0


def _gpt2_pre(m):    # prune pre-activations 10, 11: gelu(0) = 0 (Conv1D columns are outputs)
    c = _h(m)[1].mlp.c_fc
    c.weight[:, [10, 11]] = 0
    c.bias[[10, 11]] = 0


def _gpt2_out(m):    # flip residual dimension 3 of layer 0's FFN output (weight and bias)
    c = _h(m)[0].mlp.c_proj
    c.weight[:, 3] *= -1.0
    c.bias[3] *= -1.0


def _set(path_rows, value):
    def f(m):
        w = m.get_submodule(path_rows[0]).weight
        w[path_rows[1]] = value
    return f


def _mul(path, index, factor):
    def f(m):
        m.get_submodule(path).weight[index] *= factor
    return f


S = slice(None)
BAKED = {
    "gpt2": [
        (nl.Prune("blocks.0.mlp.hook_post", [1, 2, 3]), _set(("transformer.h.0.mlp.c_proj",
                                                              ([1, 2, 3], S)), 0.0)),
        (nl.Scale("blocks.1.mlp.hook_post", [4, 9], factor=2.5),
         _mul("transformer.h.1.mlp.c_proj", ([4, 9], S), 2.5)),
        (nl.Prune("blocks.1.mlp.hook_pre", [10, 11]), _gpt2_pre),
        (nl.Set("blocks.0.mlp.hook_post", [20], value=0.7), _gpt2_set),
        (nl.Scale("blocks.0.hook_mlp_out", [3], factor=-1.0), _gpt2_out),
    ],
    "llama": [
        (nl.Prune("blocks.0.mlp.hook_post", [1, 2, 3]),
         _set(("model.layers.0.mlp.down_proj", (S, [1, 2, 3])), 0.0)),
        (nl.Scale("blocks.1.mlp.hook_post", [4, 9], factor=2.5),
         _mul("model.layers.1.mlp.down_proj", (S, [4, 9]), 2.5)),
        (nl.Prune("blocks.1.mlp.hook_pre", [10, 11]),      # silu(0) = 0
         _set(("model.layers.1.mlp.gate_proj", ([10, 11], S)), 0.0)),
        (nl.Scale("blocks.0.mlp.hook_pre_linear", [12], factor=0.3),
         _mul("model.layers.0.mlp.up_proj", ([12], S), 0.3)),
        (nl.Prune("blocks.*.mlp.hook_pre_linear", [30]),
         lambda m: [_set((f"model.layers.{l}.mlp.up_proj", ([30], S)), 0.0)(m)
                    for l in (0, 1)]),
        (nl.Scale("blocks.1.hook_mlp_out", [5], factor=0.0),
         _set(("model.layers.1.mlp.down_proj", ([5], S)), 0.0)),
    ],
    "phi3": [   # gate_up_proj rows: gate 0..63, then up 64..127
        (nl.Prune("blocks.0.mlp.hook_pre", [2]),
         _set(("model.layers.0.mlp.gate_up_proj", ([2], S)), 0.0)),
        (nl.Scale("blocks.1.mlp.hook_pre_linear", [7], factor=3.0),
         _mul("model.layers.1.mlp.gate_up_proj", ([64 + 7], S), 3.0)),
        (nl.Prune("blocks.1.mlp.hook_post", [8]),
         _set(("model.layers.1.mlp.down_proj", (S, [8])), 0.0)),
    ],
}
CASES = [(a, k) for a, ops in BAKED.items() for k in range(len(ops))]


@pytest.mark.parametrize("arch,k", CASES, ids=[f"{a}-{BAKED[a][k][0].op}-{BAKED[a][k][0].site}"
                                               for a, k in CASES])
def test_bakeable_op_equals_hand_edited_weights(arch, k, tmp_path):
    """The hooked edit, and its baked export reloaded in plain transformers, both equal the
    model with the weights edited by hand."""
    op, hand = BAKED[arch][k]
    lm = tiny.lm(arch)
    ref_model = copy.deepcopy(lm.hf)
    with torch.no_grad():
        hand(ref_model)
    edits = nl.EditSet([op])
    report = lm.export(edits, tmp_path / "out")
    assert report.sidecar == [] and report.baked
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    hooked = lm.logits(PROMPTS, edits=edits)
    for p, ours in zip(PROMPTS, hooked):
        ids = lm.tokenizer(p)["input_ids"]
        want = plain_logits(ref_model, ids).numpy()
        base = plain_logits(lm.hf, ids).numpy()
        assert np.abs(want - base).max() > 1e-4                   # the edit does something
        np.testing.assert_allclose(ours, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(plain_logits(exported, ids).numpy(), want, atol=1e-5, rtol=0)
