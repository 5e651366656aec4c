"""Attention heads of a loaded LM: head counts, the attention site names and their widths, and
the checks of head indices (query heads are what users select; key/value heads are shared by
groups of query heads under grouped-query attention)."""

from __future__ import annotations

from dataclasses import dataclass

from neurolens.errors import InputError
from neurolens.spec.sites import ATTN_SITE_KINDS, parse_site, site_name

#: sites read inside the attention (need eager attention)
PATTERN_KINDS = ("attn.hook_pattern", "attn.hook_attn_scores")


@dataclass(frozen=True)
class HeadGeometry:
    n_heads: int          # query heads
    n_kv_heads: int       # key/value heads
    d_head: int

    def describe(self) -> str:
        kv = ("" if self.n_kv_heads == self.n_heads else
              f", {self.n_kv_heads} key/value head{'s' if self.n_kv_heads != 1 else ''} shared "
              "by groups of query heads")
        return f"{self.n_heads} query heads{kv}"


def geometry(model) -> HeadGeometry:
    """Head counts of ``model`` (a LanguageModel); InputError when it has no attention table."""
    arch = model.adapter.arch
    if arch is None or arch.attn is None:
        raise InputError(f"attention sites are not available for '{model.model_type}' (not in "
                         "neurolens' attention table)")
    cfg = model.hf.config
    h = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    kv = int(getattr(cfg, "num_key_value_heads", None) or h)
    attn = model.adapter.block_module(model.hf, 0, arch.attn.module)
    d = getattr(attn, "head_dim", None) or getattr(cfg, "head_dim", None) or (
        int(cfg.hidden_size) // h)
    return HeadGeometry(h, kv, int(d))


def has_attention(model) -> bool:
    arch = getattr(getattr(model, "adapter", None), "arch", None)
    return arch is not None and arch.attn is not None


def attention_sites(model) -> dict[str, int]:
    """Attention site names with their widths: ``hook_z`` n_heads * d_head (head-major),
    ``hook_attn_out`` d_model, the pattern and score sites n_heads (their units are heads)."""
    if not has_attention(model):
        return {}
    g = geometry(model)
    d_model = int(model.hf.config.hidden_size)
    width = {"attn.hook_z": g.n_heads * g.d_head, "hook_attn_out": d_model,
             "attn.hook_pattern": g.n_heads, "attn.hook_attn_scores": g.n_heads}
    return {site_name(layer, k): width[k] for layer in range(model.n_layers)
            for k in ATTN_SITE_KINDS}


def is_pattern_site(name: str) -> bool:
    s = parse_site(name)
    return s is not None and s.kind in PATTERN_KINDS


def check_heads(model, site: str, heads) -> None:
    """InputError naming the query and key/value head counts when a head is out of range."""
    g = geometry(model)
    for h in heads:
        if not 0 <= int(h) < g.n_heads:
            raise InputError(f"{site}: head {h} out of range: this model has {g.n_heads} "
                             f"query heads (0..{g.n_heads - 1}) and {g.n_kv_heads} key/value "
                             f"head{'s' if g.n_kv_heads != 1 else ''}")


def head_columns(g: HeadGeometry, heads) -> list[int]:
    """The ``hook_z`` columns (output-projection inputs) of the query heads."""
    return [h * g.d_head + j for h in heads for j in range(g.d_head)]
