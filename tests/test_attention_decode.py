"""Sparse decoding of attention top-k (softmax and value sum over the kept keys only) equals the
masked eager path within 1e-5: the logits of every decode step (Llama; Qwen2 with 4 query heads
sharing 2 key/value heads), greedy generation of a left-padded batch, and the realised counts,
with the scores from the key cache and from its transposed copy; the copy follows the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.engine.attention import decode, topk_summary
from neurolens.engine.hooks import RunState
from neurolens.engine.runner import cache_arg, out_cache
from neurolens.spec.head_edits import AttnTopK
from test_attention_acceptance import qwen2_gqa

PROMPT = "Story: Mia has a kite and a dog. The dog"


def step_logits(lm, edits, steps=6):
    """Prefill + ``steps`` greedy decode steps with a KV cache, inside one edited session;
    the logits of each step and the run's top-k counts."""
    ids = lm.encode([PROMPT])["input_ids"]
    ctx = {}
    factory = lm.session_factory(edits, None, ctx)
    out = []
    with factory(RunState(batch=1, seq=ids.shape[1], prompt_index=[0])), torch.no_grad():
        r = lm.hf(input_ids=ids, use_cache=True)
        cache, nxt = out_cache(r), r.logits[:, -1:].argmax(-1)
        for _ in range(steps):
            r = lm.hf(input_ids=nxt, use_cache=True, **{cache_arg(lm.hf): cache})
            cache, nxt = out_cache(r), r.logits[:, -1:].argmax(-1)
            out.append(r.logits[0, -1].numpy())
    return np.stack(out), topk_summary(ctx)


@pytest.mark.parametrize("build", [lambda: tiny.lm("llama"), qwen2_gqa], ids=["llama", "qwen2"])
@pytest.mark.parametrize("op", [AttnTopK(k=4), AttnTopK(keep_fraction=0.25, min_context=8),
                                AttnTopK(k=5, mode="exact"),
                                AttnTopK(k=4, calibrate="layer", z_offset={"0": 0.5, "1": -0.4})],
                         ids=["k4", "frac", "exact", "calibrated"])
def test_sparse_decode_equals_masked_eager(build, op, monkeypatch):
    monkeypatch.setattr(decode, "TRANSPOSED_AFTER", 2)     # steps 3-6: the transposed keys
    lm = build()
    edits = nl.EditSet([op])
    calls = []
    real = decode.sparse_decode
    monkeypatch.setattr(decode, "sparse_decode", lambda *a: calls.append(1) or real(*a))
    fast, s_fast = step_logits(lm, edits)
    assert len(calls) == 6 * 2                           # every decode step, both layers
    monkeypatch.setattr(decode, "ENABLED", False)
    slow, s_slow = step_logits(lm, edits)
    assert len(calls) == 12
    np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
    dense, _ = step_logits(lm, None)
    assert np.abs(fast - dense).max() > 1e-3             # top-k bites
    for layer in s_slow:                                 # the same realised counts
        assert s_fast[layer]["queries"] == s_slow[layer]["queries"]
        assert s_fast[layer]["kept"] == pytest.approx(s_slow[layer]["kept"])
    assert lm.hf.config._attn_implementation == "sdpa"


def test_sparse_decode_left_padded_batch_generation(monkeypatch):
    monkeypatch.setattr(decode, "TRANSPOSED_AFTER", 3)
    lm = tiny.lm("llama")
    prompts = [PROMPT, "Compute: 4+5="]
    edits = nl.EditSet([AttnTopK(k=3)])
    calls = []
    real = decode.sparse_decode
    monkeypatch.setattr(decode, "sparse_decode", lambda *a: calls.append(a[3].shape[0]) or
                        real(*a))
    fast = [o.token_ids for o in lm.generate(prompts, edits=edits, max_new_tokens=6,
                                             ignore_eos=True, batch_size=2)]
    assert calls and set(calls) == {2}                    # the batch's decode steps
    monkeypatch.setattr(decode, "ENABLED", False)
    slow = [o.token_ids for o in lm.generate(prompts, edits=edits, max_new_tokens=6,
                                             ignore_eos=True, batch_size=2)]
    assert fast == slow


def test_transposed_key_copy_follows_the_cache():
    """The decode step's transposed key cache: appended one column per step (past its
    headroom too), rebuilt when the cache does not continue the copy, dropped by an eager
    step; the scores from it equal q.k from the cache itself."""
    from neurolens.engine.attention.ops import AttnTopKEditor
    ed = AttnTopKEditor(AttnTopK(k=4), 0, {})
    g = torch.Generator().manual_seed(0)
    key = torch.randn(2, 3, 5, 8, generator=g)
    for _ in range(decode.HEADROOM + 3):                    # one key per step
        kt = decode.keys_t(ed, key)
        assert torch.equal(kt, key.reshape(6, -1, 8).transpose(1, 2))
        key = torch.cat([key, torch.randn(2, 3, 1, 8, generator=g)], 2)
    buf = ed.decode_keys[0]
    assert buf.shape[2] > key.shape[2] - 1 > 5 + decode.HEADROOM      # it grew
    other = torch.randn(2, 3, key.shape[2], 8, generator=g)  # one longer, not a continuation
    assert torch.equal(decode.keys_t(ed, other), other.reshape(6, -1, 8).transpose(1, 2))
    q = torch.randn(6, 1, 8, generator=g)
    np.testing.assert_allclose(torch.matmul(q, decode.keys_t(ed, other)).numpy(),
                               torch.matmul(q, other.reshape(6, -1, 8).transpose(1, 2)).numpy(),
                               atol=1e-6)
    ed(torch.zeros(2, 3, 4, 4), RunState(batch=2, seq=4))  # an eager step drops the copy
    assert ed.decode_keys is None
