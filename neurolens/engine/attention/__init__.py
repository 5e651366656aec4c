"""Attention as a site family of language models: per-head outputs (``attn.hook_z``), the
block's attention output (``hook_attn_out``), patterns and scores read through eager attention
(switched on only while needed), head edits and Spark's attention top-k.

Importing the package registers the engine side of the head ops and of ``attn_topk``. Decode
steps under attention top-k take the sparse path of :mod:`~neurolens.engine.attention.decode`
(softmax and value sum over the kept keys only) where the architecture's attention allows."""

from neurolens.engine.attention import ops  # noqa: F401 - registers the ops
from neurolens.engine.attention.capture import AttentionCapture, capture_attention
from neurolens.engine.attention.heads import (HeadGeometry, attention_sites, check_heads,
                                              geometry, has_attention, is_pattern_site)
from neurolens.engine.attention.ops import mean_ablation, topk_summary
from neurolens.engine.attention.scope import (EAGER_NOTE, check_patterns, plan_of,
                                              scoped_factory)


def eager_note(edits=None, sites=()) -> str:
    """The status-line note for a run with these edits and capture sites: ``EAGER_NOTE`` when
    it reads patterns / scores or edits the scores (eager attention), else ``""``."""
    if any(is_pattern_site(s) or s.endswith("attn.hook_pattern")
           or s.endswith("attn.hook_attn_scores") for s in sites):
        return EAGER_NOTE
    if edits is not None and any(op.op == "attn_topk" for op in edits.enabled()):
        return EAGER_NOTE
    return ""


__all__ = ["AttentionCapture", "capture_attention", "HeadGeometry", "attention_sites",
           "check_heads", "geometry", "has_attention", "is_pattern_site", "mean_ablation",
           "topk_summary",
           "EAGER_NOTE", "check_patterns", "eager_note", "plan_of", "scoped_factory"]
