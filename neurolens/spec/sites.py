"""Canonical site names (TransformerLens style) and neuron references."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

#: site kinds inside a block, in display order
SITE_KINDS = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out",
              "hook_resid_post")

#: attention site kinds (LMs): per-head outputs, the block's attention output, and the patterns
#: (heads x query x key, after / before the softmax), captured through eager attention
ATTN_SITE_KINDS = ("attn.hook_z", "hook_attn_out", "attn.hook_pattern", "attn.hook_attn_scores")

_CANON = re.compile(r"^blocks\.(\d+)\.(mlp\.hook_pre|mlp\.hook_pre_linear|mlp\.hook_post|"
                    r"hook_mlp_out|hook_resid_post|attn\.hook_z|hook_attn_out|attn\.hook_pattern|"
                    r"attn\.hook_attn_scores)$")
_NATIVE = re.compile(r"^[A-Za-z_][\w.]*:(input|output)$")


@dataclass(frozen=True)
class SiteName:
    layer: int
    kind: str

    def __str__(self) -> str:
        return f"blocks.{self.layer}.{self.kind}"


def site_name(layer: int, kind: str) -> str:
    """The canonical name of ``kind`` (e.g. ``mlp.hook_post``) in block ``layer``."""
    return str(SiteName(int(layer), kind))


def parse_site(name: str) -> SiteName | None:
    """Parse a canonical name; None for native module paths and other names."""
    m = _CANON.match(name)
    return SiteName(int(m.group(1)), m.group(2)) if m else None


def is_native(name: str) -> bool:
    """``model.layers.3.mlp.down_proj:input`` style names."""
    return bool(_NATIVE.match(name))


def is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def match_sites(pattern: str, available: list[str]) -> list[str]:
    """Sites matching a glob pattern (or the exact name), in the order of ``available``."""
    if not is_pattern(pattern):
        return [pattern] if pattern in available else []
    return [s for s in available if fnmatch.fnmatchcase(s, pattern)]


def short_kind(kind: str) -> str:
    return {"mlp.hook_pre": "pre", "mlp.hook_pre_linear": "lin", "mlp.hook_post": "post",
            "hook_mlp_out": "mlp_out", "hook_resid_post": "resid", "attn.hook_z": "z",
            "hook_attn_out": "attn_out", "attn.hook_pattern": "pattern",
            "attn.hook_attn_scores": "scores"}.get(kind, kind)


_UNET_BLOCK = re.compile(
    r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)")
_UNET_MID = re.compile(r"mid_block\.attentions\.(\d+)\.transformer_blocks\.(\d+)")


def unet_alias(path: str) -> str:
    """Short name of a UNet transformer block: ``down_blocks.1.attentions.0.transformer_blocks.0``
    (or its ``unet.<...>.ff.hook_post`` site) -> ``down1.a0.t0``; unknown paths unchanged."""
    core = path[5:] if path.startswith("unet.") else path
    core = core[:-len(".ff.hook_post")] if core.endswith(".ff.hook_post") else core
    m = _UNET_BLOCK.fullmatch(core)
    if m:
        return f"{m[1]}{m[2]}.a{m[3]}.t{m[4]}"
    m = _UNET_MID.fullmatch(core)
    if m:
        return f"mid.a{m[1]}.t{m[2]}"
    return path


#: spiking networks: ``layers.{l}.hook_spikes`` / ``layers.{l}.hook_v`` (neurons) and
#: ``layers.{l}.synapses`` (the synapses into layer l)
SNN_SITE_KINDS = ("hook_spikes", "hook_v", "synapses")
_SNN = re.compile(r"^layers\.(\d+)\.(hook_spikes|hook_v|synapses)$")


def parse_snn_site(name: str) -> tuple[int, str] | None:
    """``layers.3.hook_spikes`` -> ``(3, "hook_spikes")``; None for other names."""
    m = _SNN.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def neuron_label(site: str, index: int, with_kind: bool = False) -> str:
    """Display form ``L{layer}.N{index}`` (with the site kind when asked, e.g. ``L3.N17/pre``);
    UNet FFN sites show as ``mid.a0.t0.N17``; spiking-network sites as ``L0.N5`` (``L0.N5/v``
    for the membrane potential)."""
    snn = parse_snn_site(site)
    if snn is not None:
        kind = {"hook_spikes": "spikes", "hook_v": "v", "synapses": "syn"}[snn[1]]
        return f"L{snn[0]}.N{index}/{kind}" if with_kind else f"L{snn[0]}.N{index}"
    s = parse_site(site)
    if s is None:
        alias = unet_alias(site)
        return f"{alias}.N{index}" if alias != site else f"{site}[{index}]"
    base = f"L{s.layer}.N{index}"
    return f"{base}/{short_kind(s.kind)}" if with_kind else base


_LABEL = re.compile(r"^\s*L(?:ayer)?\s*(\d+)\s*[.:/ ,]\s*N(?:euron)?\s*(\d+)\s*$", re.I)
_PAIR = re.compile(r"^\s*\(?\s*(\d+)\s*,\s*(\d+)\s*\)?\s*$")


def parse_neuron_label(text: str) -> tuple[int, int] | None:
    """Parse what users paste: ``L3.N17``, ``layer 3 neuron 17``, ``(3, 17)``, ``3:17``."""
    for rx in (_LABEL, _PAIR):
        m = rx.match(text)
        if m:
            return int(m.group(1)), int(m.group(2))
    m = re.match(r"^\s*(\d+)\s*[:/]\s*(\d+)\s*$", text)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None
