"""The models the cases time: random GPT-2 and gated (Llama) models built from configs, and the
demo model (or the one given with ``neurolens bench -m``)."""

from __future__ import annotations


def random_gpt2(layers: int, d: int, vocab: int = 4096, seq: int = 256):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from neurolens.engine.lm import LanguageModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=d, n_head=max(1, d // 64), vocab_size=vocab,
                     n_positions=seq, bos_token_id=0, eos_token_id=0)
    return LanguageModel(GPT2LMHeadModel(cfg).eval(), None, name_or_path=f"gpt2-{layers}x{d}")


def random_gated(layers: int, d: int, d_ff: int, vocab: int = 4096):
    """A random Llama (gated MLP) without a tokenizer: prompts are token ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from neurolens.engine.lm import LanguageModel
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=d_ff,
                      num_hidden_layers=layers, num_attention_heads=max(1, d // 64),
                      num_key_value_heads=max(1, d // 64), bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)
    return LanguageModel(LlamaForCausalLM(cfg).eval(), None, name_or_path="gated-random")


def load_demo(model: str | None = None):
    """The model of the "demo model" cases (None: the shipped demo model)."""
    from neurolens.engine.loading import load
    return load(model)


def setup(lm, batch: int, seq: int, seed: int = 0):
    """Random token ids, the plain forward on them (the reference) and the hook_post sites."""
    import torch
    ids = torch.randint(1, lm.hf.config.vocab_size, (batch, seq),
                        generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)

    def plain():
        with torch.inference_mode():
            lm.hf(input_ids=ids, attention_mask=mask, use_cache=False)
    sites = [s for s in lm.sites() if s.endswith("mlp.hook_post")]
    return ids, mask, ids.tolist(), plain, sites
