"""Tiny config-built models for tests: nothing downloads."""

from __future__ import annotations

import torch

ARCH_CONFIGS = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(n_layer=2, n_embd=32, n_head=2, n_positions=128, n_inner=64)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)),
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, ffn_dim=64,
                 max_position_embeddings=128, word_embed_proj_dim=32)),
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                   num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128)),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                     num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128,
                     sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                   num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM",
              dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, intermediate_size=64,
                   max_position_embeddings=128)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, intermediate_size=64,
                    max_position_embeddings=128, sliding_window=64)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                  original_max_position_embeddings=128)),
    "bert": ("BertConfig", "BertModel",
             dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)),
    "distilbert": ("DistilBertConfig", "DistilBertModel",
                   dict(n_layers=2, dim=32, n_heads=2, hidden_dim=64,
                        max_position_embeddings=128)),
}
CAUSAL = [k for k in ARCH_CONFIGS if k not in ("bert", "distilbert")]
VOCAB = 260


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|endoftext|>": 0}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.padding_side = "left"
    return fast


def build(arch: str, seed: int = 0):
    import transformers

    cfg_name, model_name, kw = ARCH_CONFIGS[arch]
    cfg = getattr(transformers, cfg_name)(vocab_size=VOCAB, pad_token_id=0, bos_token_id=0,
                                          eos_token_id=0, **kw)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(cfg).eval()
    # random init leaves many biases at 0 and norms at 1; perturb so every path matters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def lm(arch: str = "gpt2", seed: int = 0):
    from neurolens.engine.lm import LanguageModel
    return LanguageModel(build(arch, seed), tokenizer(), name_or_path=f"tiny-{arch}")


def save(arch: str, path, seed: int = 0):
    model = build(arch, seed)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer().save_pretrained(path)
    return path


def tiny_snn_net(delays: str = "learned", seed: int = 0, kernel_size: int = 5):
    """A 4 -> 6 -> 3 spiking network with firing weights and non-trivial batch-norm statistics,
    delays rounded to whole bins (as for evaluation)."""
    from neurolens.engine.snn.network import SNNConfig, SpikingNet
    torch.manual_seed(seed)
    net = SpikingNet(SNNConfig(n_in=4, layer_sizes=[6, 3], kernel_size=kernel_size,
                               delays=delays, tau=1.5, class_names=["a", "b", "c"]))
    net.init_delays(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in net.projections():
            p.weight.mul_(3.0)
        bn = net.layers[0].bn
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.8, 1.6)
        bn.bias.uniform_(0.0, 0.6)
    net.round_delays()
    return net.eval()
