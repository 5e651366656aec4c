"""Attention sites: patterns and scores against plain transformers (eager ``output_attentions``)
and against q·k recomputed from the weights (GPT-2, and Llama with grouped-query attention),
Gemma 2's soft-cap and sliding window, decoding rows, bounded capture, and eager attention
switched back after every run (also a failed one)."""

import sys

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.engine.attention import plan_of

PROMPTS = ["Compute: 47+38=", "hi there"]
# the module paths of the attention, written out by hand from the transformers model code
ATTN = {"gpt2": "transformer.h.{l}.attn", "llama": "model.layers.{l}.self_attn",
        "qwen2": "model.layers.{l}.self_attn", "gemma2": "model.layers.{l}.self_attn"}


def eager_attentions(hf, ids) -> list[np.ndarray]:
    """Plain transformers: eager attention, ``output_attentions=True`` (one prompt)."""
    old = hf.config._attn_implementation
    hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = hf(input_ids=ids, output_attentions=True)
    finally:
        hf.set_attn_implementation(old)
    return [a[0].numpy() for a in out.attentions]


def hook_counts(hf):
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in hf.named_modules()}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "gemma2"])
def test_patterns_equal_eager_output_attentions(arch):
    lm = tiny.lm(arch)
    impl = lm.hf.config._attn_implementation
    attn_mod = sys.modules[type(lm.hf.get_submodule(ATTN[arch].format(l=0))).__module__]
    eager_fn = attn_mod.eager_attention_forward
    hooks = hook_counts(lm.hf)
    cap = lm.attention(PROMPTS, ["blocks.*.attn.hook_pattern", "blocks.*.attn.hook_attn_scores"],
                       batch_size=2)                                   # left-padded batch
    # switched back, hooks and the wrapped eager function gone
    assert lm.hf.config._attn_implementation == impl
    assert attn_mod.eager_attention_forward is eager_fn
    assert hook_counts(lm.hf) == hooks
    for i, p in enumerate(PROMPTS):
        ref = eager_attentions(lm.hf, lm.encode([p])["input_ids"])
        for layer in range(2):
            pat = cap[f"blocks.{layer}.attn.hook_pattern"][i]
            assert pat.shape == ref[layer].shape == (2, len(cap.tokens[i]), len(cap.tokens[i]))
            np.testing.assert_allclose(pat, ref[layer], atol=1e-6, rtol=0)
            sc = cap[f"blocks.{layer}.attn.hook_attn_scores"][i]
            # the pattern is the softmax of the scores; masked keys are -inf
            sm = torch.softmax(torch.from_numpy(sc), -1).numpy()
            np.testing.assert_allclose(sm, ref[layer], atol=1e-6, rtol=0)
            assert np.isneginf(sc[:, np.triu_indices(sc.shape[1], 1)[0],
                                  np.triu_indices(sc.shape[1], 1)[1]]).all()


def _gpt2_scores(hf, ids, layer):
    """q·k/sqrt(d_head) from GPT-2's c_attn weights on the attention's input."""
    got = {}
    attn = hf.get_submodule(f"transformer.h.{layer}.attn")
    h = attn.register_forward_pre_hook(
        lambda m, a, kw: got.__setitem__("x", (a[0] if a else kw["hidden_states"]).detach()),
        with_kwargs=True)
    with torch.no_grad():
        hf(input_ids=ids)
    h.remove()
    x = got["x"][0]
    w, b = hf.get_submodule(f"transformer.h.{layer}.attn.c_attn").weight, \
        hf.get_submodule(f"transformer.h.{layer}.attn.c_attn").bias
    with torch.no_grad():
        qkv = x @ w + b                                # Conv1D: [in, out]
    d = x.shape[-1]
    n_heads, dh = 2, d // 2
    q = qkv[:, :d].view(-1, n_heads, dh).transpose(0, 1)
    k = qkv[:, d:2 * d].view(-1, n_heads, dh).transpose(0, 1)
    return (q @ k.transpose(1, 2) / dh ** 0.5).numpy()


def llama_scores(hf, ids, layer):
    """q·k/sqrt(d_head) with rotary embeddings from a Llama-style model's weights (Llama,
    Qwen2); query head h reads key/value head h // (n_heads / n_kv_heads)."""
    got = {}
    attn = hf.get_submodule(f"model.layers.{layer}.self_attn")
    h = attn.register_forward_pre_hook(lambda m, a, kw: got.update(kw), with_kwargs=True)
    with torch.no_grad():
        hf(input_ids=ids)
    h.remove()
    x = got["hidden_states"][0]
    cos, sin = (t[0] for t in got["position_embeddings"])
    cfg = hf.config
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // H

    def rot(t):                                          # rotate_half, written out
        a, b = t[..., : dh // 2], t[..., dh // 2:]
        return t * cos + torch.cat([-b, a], -1) * sin
    with torch.no_grad():
        q = rot(attn.q_proj(x).view(-1, H, dh).transpose(0, 1))
        k = rot(attn.k_proj(x).view(-1, KV, dh).transpose(0, 1))
    k = k[[hh // (H // KV) for hh in range(H)]]
    return (q @ k.transpose(1, 2) / dh ** 0.5).numpy()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_scores_equal_qk_from_weights(arch):
    lm = tiny.lm(arch)
    if arch == "llama":
        assert lm.hf.config.num_key_value_heads < lm.hf.config.num_attention_heads   # GQA
    cap = lm.attention(PROMPTS[:1], "blocks.1.attn.hook_attn_scores")
    ours = cap["blocks.1.attn.hook_attn_scores"][0]
    ref = (_gpt2_scores if arch == "gpt2" else llama_scores)(
        lm.hf, lm.encode(PROMPTS[:1])["input_ids"], 1)
    low = np.tril_indices(ref.shape[1])
    np.testing.assert_allclose(ours[:, low[0], low[1]], ref[:, low[0], low[1]], atol=1e-6)


def test_gemma2_softcap_and_sliding_window():
    import transformers
    cfg_name, model_name, kw = tiny.ARCH_CONFIGS["gemma2"]
    kw = {**kw, "sliding_window": 4, "attn_logit_softcapping": 0.004}
    cfg = getattr(transformers, cfg_name)(vocab_size=tiny.VOCAB, pad_token_id=0, **kw)
    torch.manual_seed(0)
    hf = getattr(transformers, model_name)(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    from neurolens.engine.lm import LanguageModel
    lm = LanguageModel(hf, tiny.tokenizer())
    assert cfg.layer_types[0] == "sliding_attention" and cfg.layer_types[1] == "full_attention"
    cap = lm.attention(PROMPTS[:1], ["blocks.*.attn.hook_attn_scores",
                                     "blocks.*.attn.hook_pattern"])
    ref = eager_attentions(hf, lm.encode(PROMPTS[:1])["input_ids"])
    n = len(cap.tokens[0])
    q, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for layer in range(2):
        sc = cap[f"blocks.{layer}.attn.hook_attn_scores"][0]
        np.testing.assert_allclose(cap[f"blocks.{layer}.attn.hook_pattern"][0], ref[layer],
                                   atol=1e-6)
        fin = np.isfinite(sc)
        assert np.abs(sc[fin]).max() <= 0.004 + 1e-9               # after the soft-cap
        assert np.abs(sc[fin]).max() > 0.002                        # the cap bites
        visible = (k <= q) & ((q - k < 4) if layer == 0 else True)  # sliding window of 4
        assert (fin == visible[None]).all(), layer


def test_decoding_rows_and_bounded_capture():
    lm = tiny.lm("llama")
    site = "blocks.1.attn.hook_pattern"
    gen = lm.attention(PROMPTS, site, max_new_tokens=4)
    for i, p in enumerate(PROMPTS):
        out = lm.generate(p, max_new_tokens=4)
        ids = lm.encode([p])["input_ids"][0].tolist() + out.token_ids[:3]
        full = lm.attention([ids], site)[site][0]
        assert gen[site][i].shape == full.shape == (2, len(ids), len(ids))
        np.testing.assert_allclose(gen[site][i], full, atol=1e-6)
    # chosen heads, last query row of the prompt then one row per decoded step
    last = lm.attention(PROMPTS[:1], site, heads=[1], rows="last", max_new_tokens=3)[site][0]
    n = len(lm.encode(PROMPTS[:1])["input_ids"][0])
    assert last.shape == (1, 3, n + 2)
    np.testing.assert_allclose(last[0], gen[site][0][1, n - 1:n + 2, :n + 2], atol=1e-6)


def test_eager_switched_back_after_a_failure():
    lm = tiny.lm("gpt2")
    ctx = {"model": lm}

    def boom(scores, pattern, state):
        assert lm.hf.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    plan_of(ctx).add_reader(0, boom)
    factory = lm.session_factory(None, None, ctx)
    from neurolens.engine.hooks import RunState
    ids = lm.encode(["abc"])["input_ids"]
    with pytest.raises(RuntimeError, match="boom"):
        with factory(RunState(batch=1, seq=3, prompt_index=[0])), torch.no_grad():
            lm.hf(input_ids=ids)
    assert lm.hf.config._attn_implementation == "sdpa"
    mod = sys.modules[type(lm.hf.transformer.h[0].attn).__module__]
    assert not hasattr(mod.eager_attention_forward, "__wrapped__")
    from neurolens.engine.attention import scope
    assert scope._ACTIVE == {} and scope._PATCHES == {}      # no tap left behind


def test_bad_input_one_clear_line():
    lm = tiny.lm("llama")
    with pytest.raises(nl.InputError, match=r"head 2 out of range.*2 query heads.*1 key/value"):
        lm.logits("x", edits=nl.EditSet([_prune("blocks.0.attn.hook_z", [2])]))
    with pytest.raises(nl.InputError, match="model.attention"):
        lm.capture(["x"], ["blocks.0.attn.hook_pattern"])
    with pytest.raises(nl.InputError, match="attention"):
        tiny.lm("bert").attention(["x"], "blocks.0.attn.hook_pattern")
    from neurolens.spec.head_edits import AttnTopK
    with pytest.raises(nl.SpecError, match="k > 0"):
        AttnTopK(k=0)
    assert {"blocks.0.attn.hook_z", "blocks.1.hook_attn_out"} <= set(lm.attention_sites())
    assert "blocks.0.attn.hook_z" not in lm.sites()     # the FFN site list is unchanged


def _prune(site, heads):
    from neurolens.spec.head_edits import PruneHead
    return PruneHead(site, heads)


# the output projection (its input is hook_z) and the attention module (its output is
# hook_attn_out), written out by hand
Z_IN = {"gpt2": "transformer.h.{l}.attn.c_proj", "llama": "model.layers.{l}.self_attn.o_proj",
        "qwen2": "model.layers.{l}.self_attn.o_proj", "gemma2": "model.layers.{l}.self_attn.o_proj"}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_hook_z_and_attn_out_equal_plain_hooks(arch):
    lm = tiny.lm(arch)
    got = {}
    z = lm.hf.get_submodule(Z_IN[arch].format(l=1))
    a = lm.hf.get_submodule(ATTN[arch].format(l=1))
    hs = [z.register_forward_pre_hook(lambda m, args: got.__setitem__("z", args[0][0].clone())),
          a.register_forward_hook(lambda m, args, out: got.__setitem__("o", out[0][0].clone()))]
    with torch.no_grad():
        lm.hf(**lm.encode(PROMPTS[:1]))
    for h in hs:
        h.remove()
    cap = lm.capture(PROMPTS[:1], ["blocks.1.attn.hook_z", "blocks.*.hook_attn_out"])
    np.testing.assert_allclose(cap["blocks.1.attn.hook_z"][0], got["z"].numpy(), atol=1e-6)
    np.testing.assert_allclose(cap["blocks.1.hook_attn_out"][0], got["o"].numpy(), atol=1e-6)
    assert lm.attention_sites()["blocks.1.attn.hook_z"] == 32      # 2 heads x 16


def test_asking_a_head_site_width_leaves_sites_and_pattern_order_alone():
    """``site_width`` of hook_z (not a canonical FFN site), asked layer 1 first: ``sites()``
    keeps the canonical list, and ``blocks.*.attn.hook_z`` still expands in layer order."""
    lm = tiny.lm("llama")
    before = list(lm.sites())
    assert lm.site_width("blocks.1.attn.hook_z") == lm.hf.config.num_attention_heads * 16
    lm.site_width("blocks.0.attn.hook_z")
    assert list(lm.sites()) == before
    assert lm.resolve_sites("blocks.*.attn.hook_z") == ["blocks.0.attn.hook_z",
                                                         "blocks.1.attn.hook_z"]
