"""Per-head attention summaries (neurolens.engine.head_summary) against patterns and head
outputs read independently: plain transformers with eager attention and output_attentions,
plain torch hooks on the output projection (module paths written out by hand), and hand-made
patterns."""

import numpy as np
import pytest
import torch

import tiny
from neurolens.engine.head_summary import (HeadSummary, head_detail, head_summary,
                                           induction_score)
from neurolens.errors import InputError

#: the output projection (its input is hook_z) per architecture, by hand
O_PROJ = {"gpt2": "transformer.h.{l}.attn.c_proj", "llama": "model.layers.{l}.self_attn.o_proj"}
PROMPTS = ["Compute: 47+38=", "hello world, hello", "x"]
SETS = ["a", "a", "b"]


def eager_reference(arch, ids_list):
    """Per prompt: the patterns of every layer ``[layers, heads, n, n]`` from plain eager
    transformers, and the per-token head-output norms ``[layers, n, heads]`` read with a torch
    hook on the output projection."""
    hf = tiny.build(arch)
    hf.set_attn_implementation("eager")
    n_heads = hf.config.num_attention_heads
    out = []
    for ids in ids_list:
        z = {}
        hooks = [hf.get_submodule(O_PROJ[arch].format(l=layer)).register_forward_pre_hook(
            lambda mod, args, layer=layer, z=z: z.__setitem__(layer, args[0][0].detach().clone()))
            for layer in range(hf.config.num_hidden_layers)]
        with torch.no_grad():
            o = hf(input_ids=torch.tensor([ids]), output_attentions=True)
        for h in hooks:
            h.remove()
        pats = np.stack([a[0].numpy() for a in o.attentions])
        norms = np.stack([np.linalg.norm(z[layer].numpy().reshape(len(ids), n_heads, -1),
                                         axis=-1) for layer in sorted(z)])
        out.append((pats, norms))
    return out


def numpy_metrics(p):
    """The summaries of one head's pattern [n, n], written out with loops (queries 1..n-1)."""
    n = p.shape[0]
    ent, dist, prev, first = [], [], [], []
    for q in range(1, n):
        row = p[q]
        nz = row[row > 0]
        ent.append(-(nz * np.log(nz)).sum())
        dist.append(sum(row[k] * abs(q - k) for k in range(n)))
        prev.append(row[q - 1])
        first.append(row[0])
    return {"entropy": np.mean(ent), "distance": np.mean(dist), "prev": np.mean(prev),
            "first": np.mean(first)}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_summaries_equal_numpy_on_eager_transformers_patterns(arch):
    m = tiny.lm(arch)
    s = head_summary(m, PROMPTS, SETS, induction_len=6, induction_n=2, seed=3)
    tok = tiny.tokenizer()
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    ref = eager_reference(arch, ids)
    n_layers, n_heads = 2, 2
    assert s.shape == (n_layers, n_heads)
    for i, (pats, norms) in enumerate(ref):
        for layer in range(n_layers):
            for h in range(n_heads):
                if len(ids[i]) < 2:      # one token: nothing to summarise but its norm
                    for k in ("entropy", "distance", "prev", "first"):
                        assert np.isnan(s.per_prompt[k][i, layer, h])
                else:
                    want = numpy_metrics(pats[layer, h])
                    for k, v in want.items():
                        np.testing.assert_allclose(s.per_prompt[k][i, layer, h], v,
                                                   rtol=1e-5, atol=1e-6, err_msg=f"{k} {i}")
                np.testing.assert_allclose(s.per_prompt["out_norm"][i, layer, h],
                                           norms[layer, :, h].mean(), rtol=1e-5)
    # set means and the set difference A - B
    prev = s.per_prompt["prev"]
    np.testing.assert_allclose(s.mean("prev", "a"), prev[:2].mean(0), rtol=1e-6)
    assert s.mean("prev", "b") is None and s.diff("prev", "a", "b") is None
    on = s.per_prompt["out_norm"]
    np.testing.assert_allclose(s.diff("out_norm", "a", "b"), on[:2].mean(0) - on[2], rtol=1e-5)
    # induction: the sequences it used, through eager transformers
    L, off = s.induction_len, s.induction_offset
    seqs = s.induction_tokens
    assert len(seqs) == 2 and all(len(q) == off + 2 * L for q in seqs)
    assert all(q[off:off + L] == q[off + L:] for q in seqs)
    want = np.zeros((n_layers, n_heads))
    for pats, _ in eager_reference(arch, seqs):
        for q in range(off + L, off + 2 * L):
            want += pats[:, :, q, q - L + 1] / L / len(seqs)
    np.testing.assert_allclose(s.induction, want, rtol=1e-5, atol=1e-7)
    assert s.diff("induction", "a", "b") is None     # not measured per prompt set


def test_induction_score_on_a_hand_made_pattern():
    L, off = 3, 1
    T = off + 2 * L
    p = np.zeros((3, T, T), np.float32)
    for q in range(T):
        p[2, q, :q + 1] = 1.0 / (q + 1)             # uniform causal
        p[0, q, 0] = 1.0                            # everything on the first token ...
        p[1, q, q] = 1.0
    for q in range(off + L, T):                     # ... but the second copy's queries
        p[0, q] = 0.0
        p[0, q, q - L + 1] = 1.0                    # a perfect induction head
        p[1, q] = 0.0
        p[1, q, q - L + 1] = 0.5                    # half on the induction target
        p[1, q, q] = 0.5
    got = induction_score(p, L, off)
    np.testing.assert_allclose(got, [1.0, 0.5, (1 / 5 + 1 / 6 + 1 / 7) / 3], rtol=1e-6)
    with pytest.raises(InputError, match="at least 7 tokens"):
        induction_score(p[:, :6, :6], L, off)


def test_head_detail_equals_eager_patterns_and_hook_norms():
    m = tiny.lm("llama")
    d = head_detail(m, "hello world", 1)
    ids = tiny.tokenizer()("hello world")["input_ids"]
    pats, norms = eager_reference("llama", [ids])[0]
    assert d.tokens == list("hello world")
    np.testing.assert_allclose(d.pattern, pats[1], atol=1e-6)
    np.testing.assert_allclose(d.out_norm, norms[1], rtol=1e-5)
    with pytest.raises(InputError, match="layer 2 out of range"):
        head_detail(m, "hello", 2)


def test_set_means_skip_one_token_prompts():
    nan = np.nan
    per = {"prev": np.array([[[0.2, 0.4]], [[0.6, 0.8]], [[nan, nan]]], np.float32)}
    s = HeadSummary(["p", "q", "r"], ["a", "b", "b"], per, np.zeros((1, 2), np.float32))
    np.testing.assert_allclose(s.mean("prev"), [[0.4, 0.6]])
    np.testing.assert_allclose(s.mean("prev", "b"), [[0.6, 0.8]])
    np.testing.assert_allclose(s.diff("prev", "a", "b"), [[-0.4, -0.4]], rtol=1e-6)
    with pytest.raises(InputError, match="unknown head summary"):
        s.mean("nope")


def test_a_cancelled_summary_ends_cancelled():
    from neurolens.engine.events import Cancelled
    from neurolens.engine.head_summary import head_summary_events
    from neurolens.engine.hooks import CancelToken
    tok = CancelToken()
    tok.cancel()
    evs = list(head_summary_events(tiny.lm("gpt2"), ["hello"], induction_len=4, cancel=tok))
    assert isinstance(evs[-1], Cancelled)
