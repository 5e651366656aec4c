"""Issue 28 acceptance, the parts not covered elsewhere: patterns on a config-built Qwen2 with
grouped-query attention (4 query heads sharing 2 key/value heads) against eager transformers'
``output_attentions`` and against q·k recomputed from the weights; attention top-k with k >= n
equal to eager dense attention, and with k = n - 1 masking exactly the lowest-scoring key of each
query; a pattern site on an architecture whose attention cannot return the weights (GPT-2 with
``reorder_and_upcast_attn``) is one clear line naming it, exit 2 in the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurolens as nl
import tiny
from neurolens.cli import main
from neurolens.engine.lm import LanguageModel
from neurolens.spec.head_edits import AttnTopK
from test_attention_sites import eager_attentions, llama_scores

PROMPTS = ["Compute: 47+38=", "hi there"]


def qwen2_gqa():
    """Qwen2 with 4 query heads and 2 key/value heads (d_head 8), q/k/v biases."""
    import transformers
    cfg = transformers.Qwen2Config(vocab_size=tiny.VOCAB, pad_token_id=0, bos_token_id=0,
                                   eos_token_id=0, num_hidden_layers=2, hidden_size=32,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(1)
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return LanguageModel(hf, tiny.tokenizer(), name_or_path="tiny-qwen2-gqa")


def test_qwen2_gqa_patterns_equal_output_attentions_and_qk():
    lm = qwen2_gqa()
    cfg = lm.hf.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads == 4
    cap = lm.attention(PROMPTS, ["blocks.*.attn.hook_pattern", "blocks.*.attn.hook_attn_scores"],
                       batch_size=2)                                      # left-padded batch
    assert lm.hf.config._attn_implementation == "sdpa"                   # switched back
    for i, p in enumerate(PROMPTS):
        ids = lm.encode([p])["input_ids"]
        ref = eager_attentions(lm.hf, ids)
        n = ids.shape[1]
        for layer in range(2):
            pat = cap[f"blocks.{layer}.attn.hook_pattern"][i]
            assert pat.shape == (4, n, n)
            np.testing.assert_allclose(pat, ref[layer], atol=1e-6, rtol=0)
            sc = cap[f"blocks.{layer}.attn.hook_attn_scores"][i]
            low = np.tril_indices(n)
            want = llama_scores(lm.hf, ids, layer).astype(np.float64)
            np.testing.assert_allclose(sc[:, low[0], low[1]], want[:, low[0], low[1]],
                                       atol=1e-5, rtol=0)
    # heads sharing a key/value head still differ (their queries differ)
    pat = cap["blocks.1.attn.hook_pattern"][0]
    assert np.abs(pat[0] - pat[1]).max() > 1e-3
    # one head of the second key/value group, alone
    one = lm.attention(PROMPTS[:1], "blocks.1.attn.hook_pattern", heads=[3])
    np.testing.assert_allclose(one["blocks.1.attn.hook_pattern"][0][0], pat[3], atol=1e-7)
    with pytest.raises(nl.InputError, match=r"head 4 out of range.*4 query heads.*2 key/value"):
        lm.attention(PROMPTS[:1], "blocks.1.attn.hook_pattern", heads=[4])


@pytest.mark.parametrize("mode", ["statistical", "exact"])
def test_attn_topk_k_at_least_n_is_eager_dense_attention(mode):
    lm = qwen2_gqa()
    p = PROMPTS[0]
    ids = lm.encode([p])["input_ids"]
    n = ids.shape[1]
    ref = eager_attentions(lm.hf, ids)
    for op in (AttnTopK(k=n, mode=mode), AttnTopK(k=n + 7, mode=mode),
               AttnTopK(keep_fraction=1.0, mode=mode)):
        cap = lm.attention([p], "blocks.*.attn.hook_pattern", edits=nl.EditSet([op]))
        for layer in range(2):
            np.testing.assert_allclose(cap[f"blocks.{layer}.attn.hook_pattern"][0], ref[layer],
                                       atol=1e-6, rtol=0)


def test_attn_topk_k_n_minus_1_masks_exactly_the_lowest_key():
    """Per query length m (the prompt's prefix of m tokens: its last query sees n = m keys),
    k = m - 1 in exact mode masks exactly one key: the lowest-scoring one of the dense scores,
    and the pattern is the softmax of the dense scores over the other keys."""
    lm = qwen2_gqa()
    site, scores = "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"
    ids = lm.encode([PROMPTS[0]])["input_ids"][0].tolist()
    checked = 0
    for m in range(2, len(ids) + 1):
        pre = ids[:m]
        dense = lm.attention([pre], scores)[scores][0][:, -1].astype(np.float64)   # [heads, m]
        assert all(len(np.unique(row)) == m for row in dense)                      # distinct
        op = AttnTopK(scores, k=m - 1, mode="exact")
        pat = lm.attention([pre], site, edits=nl.EditSet([op]))[site][0][:, -1]
        for h in range(dense.shape[0]):
            low = int(np.argmin(dense[h]))
            assert (pat[h] == 0).sum() == 1 and pat[h, low] == 0
            keep = np.delete(np.arange(m), low)
            e = np.exp(dense[h, keep] - dense[h, keep].max())
            np.testing.assert_allclose(pat[h, keep], e / e.sum(), atol=1e-6)
            checked += 1
    assert checked == 4 * (len(ids) - 1)


def _upcast_gpt2():
    """GPT-2 with ``reorder_and_upcast_attn``: its eager path computes the softmax in its own
    method, not through the architecture's eager attention function, so no weights come out."""
    import transformers
    _, _, kw = tiny.ARCH_CONFIGS["gpt2"]
    cfg = transformers.GPT2Config(vocab_size=tiny.VOCAB, pad_token_id=0, bos_token_id=0,
                                  eos_token_id=0, reorder_and_upcast_attn=True, **kw)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_pattern_site_without_weights_names_the_architecture(tmp_path, capsys):
    hf = _upcast_gpt2()
    lm = LanguageModel(hf, tiny.tokenizer())
    for run in (lambda: lm.attention(["x"], "blocks.0.attn.hook_pattern"),
                lambda: lm.logits("xy", edits=nl.EditSet([AttnTopK(k=1)]))):
        with pytest.raises(nl.InputError, match="not available for 'gpt2'.*reorder_and_upcast"):
            run()
        assert hf.config._attn_implementation == "sdpa"
    hf.save_pretrained(tmp_path / "m", safe_serialization=True)
    tiny.tokenizer().save_pretrained(tmp_path / "m")
    code = main(["capture", "-m", str(tmp_path / "m"), "--prompt", "hello", "--site",
                 "blocks.0.attn.hook_pattern", "--out", str(tmp_path / "c.safetensors")])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "'gpt2'" in err and "reorder_and_upcast_attn" in err
