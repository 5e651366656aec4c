"""Canonical site names (TransformerLens style) and neuron references."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

#: site kinds inside a block, in display order
SITE_KINDS = ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out",
              "hook_resid_post")

_CANON = re.compile(r"^blocks\.(\d+)\.(mlp\.hook_pre|mlp\.hook_pre_linear|mlp\.hook_post|"
                    r"hook_mlp_out|hook_resid_post)$")
_NATIVE = re.compile(r"^[A-Za-z_][\w.]*:(input|output)$")


@dataclass(frozen=True)
class SiteName:
    layer: int
    kind: str

    def __str__(self) -> str:
        return f"blocks.{self.layer}.{self.kind}"


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
            "hook_mlp_out": "mlp_out", "hook_resid_post": "resid"}.get(kind, kind)


def neuron_label(site: str, index: int, with_kind: bool = False) -> str:
    """Display form ``L{layer}.N{index}`` (with the site kind when asked, e.g. ``L3.N17/pre``)."""
    s = parse_site(site)
    if s is None:
        return f"{site}[{index}]"
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
