"""Every covered architecture: sites resolve, capture equals a plain forward hook, edits act,
batched left-padded runs equal single runs, and no hook survives a run."""

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from native_sites import NATIVE
from native_sites import plain_read as native_read
from neurolens.engine.adapters import ARCHS

PROMPTS = ["Compute: 47+38=", "Story: Mia has a kite.", "hi"]


def hook_dicts(model):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks))
            for n, m in model.named_modules()}


def plain_read(lm, arch, site, prompt):
    """Read a site with nothing but plain torch hooks on the module written out by hand in
    ``native_sites`` (not neurolens' own table)."""
    layer, kind = int(site.split(".")[1]), site.split(".", 2)[2]
    return native_read(lm.hf, arch, {site: (kind, layer)}, **lm.encode([prompt]))[site]


@pytest.mark.parametrize("arch", list(tiny.ARCH_CONFIGS))
def test_capture_equals_plain_hook(arch):
    lm = tiny.lm(arch)
    assert ARCHS[arch].tested
    sites = lm.sites()
    kinds = {s.split(".", 2)[2] for s in sites}
    assert {"mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"} <= kinds
    before = hook_dicts(lm.hf)
    cap = lm.capture(PROMPTS[:1], list(sites))
    assert hook_dicts(lm.hf) == before
    for site in sites:
        ours = cap[site][0]
        ref = plain_read(lm, arch, site, PROMPTS[0])
        assert ours.shape == ref.shape, site
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6, err_msg=site)


@pytest.mark.parametrize("arch", list(tiny.ARCH_CONFIGS))
def test_batched_padded_capture_matches_single(arch):
    lm = tiny.lm(arch)
    site = "blocks.1.mlp.hook_post"
    batched = lm.capture(PROMPTS, [site], batch_size=3)[site]
    for i, p in enumerate(PROMPTS):
        single = lm.capture([p], [site])[site][0]
        assert batched[i].shape == single.shape
        np.testing.assert_allclose(batched[i], single, rtol=1e-4, atol=1e-5)
    for red in ("last", "mean", "max"):
        r = lm.capture(PROMPTS, [site], reduce=red, batch_size=3)[site]
        for i, p in enumerate(PROMPTS):
            full = lm.capture([p], [site])[site][0]
            want = {"last": full[-1], "mean": full.mean(0), "max": full.max(0)}[red]
            np.testing.assert_allclose(r[i][0], want, rtol=1e-4, atol=1e-5, err_msg=red)


@pytest.mark.parametrize("arch", tiny.CAUSAL)
def test_prune_post_equals_zeroed_down_columns(arch):
    """Pruning hook_post neurons == zeroing those input columns of the down projection."""
    lm = tiny.lm(arch)
    neurons = [1, 5, 9]
    down_path = NATIVE[arch]["mlp.hook_post"][0].format(l=0)   # written out by hand
    edits = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", neurons)])
    ours = lm.logits(PROMPTS, edits=edits)
    base = lm.logits(PROMPTS)
    assert max(np.abs(a - b).max() for a, b in zip(ours, base)) > 1e-4  # it does something
    down = lm.hf.get_submodule(down_path)
    with torch.no_grad():
        if arch == "gpt2":          # Conv1D: weight rows are the inputs
            down.weight[neurons, :] = 0
        else:
            down.weight[:, neurons] = 0
    ref = lm.logits(PROMPTS)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", tiny.CAUSAL)
def test_batched_generation_equals_single(arch):
    lm = tiny.lm(arch)
    before = hook_dicts(lm.hf)
    edits = nl.EditSet([nl.Scale("blocks.1.mlp.hook_pre", [0, 3], factor=3.0)])
    outs = lm.generate(PROMPTS, edits=edits, max_new_tokens=6, batch_size=3)
    for p, o in zip(PROMPTS, outs):
        single = lm.generate(p, edits=edits, max_new_tokens=6)
        assert single.token_ids == o.token_ids
        np.testing.assert_allclose(single.logprobs, o.logprobs, atol=1e-4)
    assert hook_dicts(lm.hf) == before


def test_encoder_generation_is_refused():
    lm = tiny.lm("bert")
    with pytest.raises(nl.InputError, match="encoder"):
        lm.generate("hello", max_new_tokens=2)


def test_unknown_architecture_falls_back_to_native_names():
    lm = tiny.lm("gpt2")
    lm.hf.config.model_type = "mystery"
    from neurolens.engine.adapters import adapter_for
    lm.adapter = adapter_for(lm.hf)
    lm._widths = None
    assert lm.sites() == {}
    assert any("not in neurolens' table" in n for n in [lm.adapter.message])
    cap = lm.capture(["hi there"], ["transformer.h.1.mlp.c_proj:input"])
    assert cap["transformer.h.1.mlp.c_proj:input"][0].shape == (8, 64)
    with pytest.raises(nl.InputError, match="not in neurolens' table"):
        lm.resolve("blocks.0.mlp.hook_post")
    # native names can be edited too
    e = nl.EditSet([nl.Prune("transformer.h.1.mlp.c_proj:input", [0, 1])])
    a, b = lm.logits(["hi there"], edits=e)[0], lm.logits(["hi there"])[0]
    assert np.abs(a - b).max() > 1e-5
