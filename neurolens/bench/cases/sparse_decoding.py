"""Sparse decoding: statistical top-k (8%) computed sparsely against the dense FFN."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check
from neurolens.bench.models import random_gated


def case(layers: int, d: int, d_ff: int, new_tokens: int, reps: int) -> Case:
    """Batch-1 greedy decoding with statistical top-k (8%) computed sparsely vs dense."""
    import torch

    from neurolens.engine.sparse import sparse_ffn
    from neurolens.spec.edits import EditSet, TopK
    lm = random_gated(layers, d, d_ff)
    prompt = torch.randint(1, 4000, (8,), generator=torch.Generator().manual_seed(3)).tolist()
    topk = EditSet([TopK("blocks.*.mlp.hook_pre", 0.08)])

    def gen_ids(edits=None):   # greedy from token ids (the random model has no tokenizer)
        return lm.generate(prompt, edits=edits, max_new_tokens=new_tokens, ignore_eos=True,
                           batch_size=1).token_ids

    def dense():
        gen_ids()

    result = {}

    def sparse():
        with sparse_ffn(lm, 0.08) as st:
            result["ids"] = gen_ids()
            result["stats"] = dict(st)

    t_sparse, t_dense = alternate(sparse, dense, reps)
    same = result["ids"] == gen_ids(topk)
    r = t_dense / t_sparse
    act = result["stats"].get("active", 0) / max(result["stats"].get("total", 1), 1)
    return Case(f"sparse decoding, top-k 8% ({layers}x{d}, d_ff {d_ff}, batch 1, "
                f"{new_tokens} tokens): speed-up", t_sparse, t_dense, r, ">= 1.30",
                check(r, ">= 1.30") and same,
                detail={"identical_to_topk_edit": same, "active_fraction": round(act, 4)})
