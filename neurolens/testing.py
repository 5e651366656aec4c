"""Testing helpers: small Stable-Diffusion-layout pipelines built from configs (no downloads).

Used by the tests (random weights, the ``tiny_pipeline_dir`` fixture) and as the skeleton of the
demo diffusion model (``training/train_diffusion.py``): a ``UNet2DConditionModel`` with
cross-attention transformer blocks, a small ``CLIPTextModel``, a word-level ``CLIPTokenizer``
made from our own vocabulary, an ``AutoencoderKL`` and a DDIM scheduler, put together as a plain
``StableDiffusionPipeline`` that ``diffusers`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_WORDS = ["a", "an", "the", "handwritten", "digit", "of", "number", "exhibit", "photo",
              "image", "picture", "drawing", "sketch", "zero", "one", "two", "three", "four",
              "five", "six", "seven", "eight", "nine", "and", "with", "in", "style", "white",
              "black", "on", "blurry", "sharp", "bold", "thin", "small", "large"]


def clip_tokenizer(words: list[str] | None = None, max_length: int = 16):
    """A CLIPTokenizer whose vocabulary has every byte-level character plus whole words.

    Words become single tokens through prefix merges; anything else falls back to characters,
    so no prompt is ever out of vocabulary."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    words = sorted(set(words or BASE_WORDS) | set(BASE_WORDS))
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for t in (ch, ch + "</w>"):
            vocab.setdefault(t, len(vocab))
    merges: list[tuple[str, str]] = []
    seen = set()
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        if len(parts) < 2:
            continue
        cur = parts[0]
        for p in parts[1:]:
            pair = (cur, p)
            cur = cur + p
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            vocab.setdefault(cur, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    return tok


@dataclass
class PipelineConfig:
    sample_size: int = 16          # latent side (the VAE does not downsample)
    channels: int = 1              # grayscale
    blocks: tuple = (32, 64)
    layers_per_block: int = 1
    cross_dim: int = 32
    text_layers: int = 2
    text_heads: int = 2
    heads: int = 2
    max_length: int = 16
    vae_blocks: tuple = (16,)
    attn_all_levels: bool = False   # cross-attention transformer blocks at every resolution
    transformer_layers: int = 1     # transformer layers (each with an FFN) per attention block


def build_pipeline(cfg: PipelineConfig | None = None, words: list[str] | None = None,
                   seed: int = 0):
    """A StableDiffusionPipeline with random weights (seeded)."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = cfg or PipelineConfig()
    torch.manual_seed(seed)
    tok = clip_tokenizer(words, cfg.max_length)
    n = len(cfg.blocks)
    unet = UNet2DConditionModel(
        sample_size=cfg.sample_size, in_channels=cfg.channels, out_channels=cfg.channels,
        block_out_channels=cfg.blocks, layers_per_block=cfg.layers_per_block,
        down_block_types=(("CrossAttnDownBlock2D",) * n if cfg.attn_all_levels else
                          ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)),
        up_block_types=(("CrossAttnUpBlock2D",) * n if cfg.attn_all_levels else
                        ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)),
        cross_attention_dim=cfg.cross_dim, attention_head_dim=cfg.blocks[0] // cfg.heads,
        transformer_layers_per_block=cfg.transformer_layers,
        norm_num_groups=min(8, cfg.blocks[0]))
    vae = AutoencoderKL(in_channels=cfg.channels, out_channels=cfg.channels,
                        down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_blocks),
                        up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_blocks),
                        block_out_channels=cfg.vae_blocks, latent_channels=cfg.channels,
                        layers_per_block=1, norm_num_groups=min(8, cfg.vae_blocks[0]),
                        sample_size=cfg.sample_size)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=cfg.cross_dim, intermediate_size=cfg.cross_dim * 2,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                          clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon",
                          steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
