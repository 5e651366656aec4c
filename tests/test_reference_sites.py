"""Sites and generation-time capture against references neurolens does not control: module
paths written out by hand (``native_sites``), plain torch hooks, the FFN recomputed from the raw
weights, and plain ``transformers`` generation of a hand-edited copy of the model."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neurolens as nl
import tiny
from native_sites import GATED, NATIVE, act_fn, module, native, plain_greedy, plain_read
from neurolens.engine.events import Finished
from neurolens.spec.run import GenerationParams
from neurolens.store import CaptureStore

PROMPT = "Compute: 47+38="


def all_sites(arch, n_layers=2):
    return {f"blocks.{l}.{k}": (k, l) for l in range(n_layers) for k in NATIVE[arch]}


@pytest.mark.parametrize("arch", list(tiny.ARCH_CONFIGS))
def test_sites_read_the_hand_written_modules(arch):
    lm = tiny.lm(arch)
    sites = all_sites(arch)
    assert set(lm.sites()) == set(sites)            # the same sites, no more, no fewer
    cap = lm.capture([PROMPT], list(sites))
    ids = lm.encode([PROMPT])["input_ids"][0].tolist()
    refs = plain_read(lm.hf, arch, sites, **lm.encode([PROMPT]))
    for site in sites:
        ref = refs[site]
        assert cap[site][0].shape == ref.shape == (len(ids), ref.shape[-1]), site
        np.testing.assert_allclose(cap[site][0], ref, rtol=1e-5, atol=1e-6, err_msg=site)


def _mlp_input(lm, arch, layer):
    """The normed residual entering the FFN of ``layer`` (plain hook on a hand-written path)."""
    path = {"gpt2": "transformer.h.{l}.mlp", "gpt_neox": "gpt_neox.layers.{l}.mlp",
            "opt": "model.decoder.layers.{l}.fc1", "bert": "encoder.layer.{l}.intermediate",
            "distilbert": "transformer.layer.{l}.ffn"}.get(arch, "model.layers.{l}.mlp")
    got = []
    h = module(lm.hf, path.format(l=layer)).register_forward_pre_hook(
        lambda m, a: got.append(a[0].detach().clone()))
    try:
        with torch.no_grad():
            lm.hf(**lm.encode([PROMPT]))
    finally:
        h.remove()
    x = got[0]
    return x if x.ndim == 3 else x[None]


def _ffn_weights(lm, arch, layer):
    """(gate or fc_in) and up weights as [out, in] matrices with biases, from the raw params of
    the modules in the hand-written table (a fused half is a block of the weight's rows)."""
    def weights(kind):
        path, _, half = native(arch, kind, layer)
        mod = module(lm.hf, path)
        w = mod.weight.t() if arch == "gpt2" else mod.weight   # GPT-2's Conv1D: [in, out]
        if half is None:
            return w, mod.bias
        k, n = half
        rows = w.shape[0] // n
        return w[k * rows:(k + 1) * rows], None              # Phi-3: gate rows, then up rows
    return weights("mlp.hook_pre"), weights("mlp.hook_pre_linear") if arch in GATED else None


@pytest.mark.parametrize("arch", list(tiny.ARCH_CONFIGS))
def test_ffn_sites_recomputed_from_raw_weights(arch):
    """hook_pre = gate(x) (fc_in(x)), hook_pre_linear = up(x), hook_post = act(gate(x)) * up(x)
    (act(fc_in(x))), from the weights and the FFN's input alone."""
    lm = tiny.lm(arch)
    act = act_fn(arch)
    for layer in range(2):
        sites = [f"blocks.{layer}.mlp.hook_pre", f"blocks.{layer}.mlp.hook_post"]
        if arch in GATED:
            sites.append(f"blocks.{layer}.mlp.hook_pre_linear")
        cap = lm.capture([PROMPT], sites)
        x = _mlp_input(lm, arch, layer)[0].float()
        (wg, bg), up = _ffn_weights(lm, arch, layer)
        with torch.no_grad():
            gate = F.linear(x, wg, bg)
            post = act(gate)
            if up is not None:
                upv = F.linear(x, up[0], up[1])
                post = post * upv
                np.testing.assert_allclose(cap[sites[2]][0], upv.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cap[sites[0]][0], gate.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cap[sites[1]][0], post.numpy(), rtol=1e-5, atol=1e-5)


# -- capture while generating ---------------------------------------------------------------------
GEN_SITES = ["blocks.0.mlp.hook_pre", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"]
GEN_PROMPTS = ["Compute: 47+38=", "hi", "Story: Mia"]


def _down_path(arch, layer):
    return NATIVE[arch]["mlp.hook_post"][0].format(l=layer)


def _hand_edit(model, arch):
    """The weights of EDITS below, edited by hand on a copy: prune layer 0's neurons 1, 5, 9
    (zero the down projection's input columns) and scale layer 1's neuron 3 by 2."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer, idx, f in ((0, [1, 5, 9], 0.0), (1, [3], 2.0)):
            w = module(m, _down_path(arch, layer)).weight
            if arch == "gpt2":          # Conv1D: rows are the inputs
                w[idx, :] *= f
            else:
                w[:, idx] *= f
    return m


EDITS = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [1, 5, 9]),
                    nl.Scale("blocks.1.mlp.hook_post", [3], factor=2.0)])


@pytest.mark.parametrize("arch,edited", [("llama", False), ("llama", True), ("gpt2", False),
                                         ("gpt2", True), ("phi3", False)])
def test_rows_streamed_while_generating_equal_one_plain_forward(arch, edited):
    """The rows a run streams into the store (the live heatmaps' data) equal plain hooks on one
    forward over prompt + generated tokens; left-padded batch of three; with edits, the store
    holds the edited values and the tokens are those of a hand-edited copy."""
    lm = tiny.lm(arch)
    store = CaptureStore()
    params = GenerationParams(max_new_tokens=5, ignore_eos=True, batch_size=3)
    events = list(lm.generate_events(GEN_PROMPTS, edits=EDITS if edited else None, params=params,
                                     capture_sites=GEN_SITES, store=store))
    assert isinstance(events[-1], Finished)
    outs = events[-1].result
    ref_model = _hand_edit(lm.hf, arch) if edited else lm.hf
    kinds = {s: (s.split(".", 2)[2], int(s.split(".")[1])) for s in GEN_SITES}
    for i, (p, o) in enumerate(zip(GEN_PROMPTS, outs)):
        pids = lm.tokenizer(p)["input_ids"]
        assert len(o.token_ids) == 5
        # the last token is sampled, never fed back: no rows for it
        fed = pids + o.token_ids[:-1]
        ref = plain_read(ref_model, arch, kinds, input_ids=torch.tensor([fed]))
        if edited:   # the captured site shows the value after its own edit
            ref["blocks.1.mlp.hook_post"][:, 3] *= 2.0
        for s in GEN_SITES:
            got = store.rows(s, i)
            assert got.shape == ref[s].shape, (s, i)
            np.testing.assert_allclose(got, ref[s], rtol=1e-4, atol=1e-5, err_msg=f"{s} #{i}")
        # the tokens are the plain model's greedy choice (hand-edited copy for the edit run)
        assert o.token_ids == plain_greedy(ref_model, pids, 5), i
    if edited:   # the edit changes the run (else the edited case tests nothing)
        plain = lm.generate(GEN_PROMPTS, max_new_tokens=5, ignore_eos=True)
        assert any(a.logprobs != b.logprobs for a, b in zip(plain, outs))
