"""neurolens capture against nnsight's trace + save of the same sites."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check
from neurolens.bench.models import setup


def nnsight_capture(lm, ids, mask, sites):
    """Capture the same sites with nnsight's tracing and .save() (benchmark reference)."""
    import torch
    try:
        from nnsight import NNsight
    except ImportError:
        raise RuntimeError("nnsight is not installed: pip install 'neurolens[bench]'") from None
    import copy
    refs = [lm.resolve(s) for s in sites]
    # nnsight patches the modules it wraps for good (every call then goes through its
    # dispatcher); wrap a copy so the neurolens runs measure the unwrapped model. The copy
    # shares the original's weight tensors: a second copy of the weights sits elsewhere in
    # memory, and that placement alone moved neurolens' own time by 4% here
    shared = {id(t): t for t in [*lm.hf.parameters(), *lm.hf.buffers()]}
    model = NNsight(copy.deepcopy(lm.hf, shared))

    def envoy(path):
        e = model
        for part in path.split("."):
            e = e[int(part)] if part.isdigit() else getattr(e, part)
        return e
    envoys = [(envoy(r.module_path), r.io) for r in refs]

    def run():
        saved = []
        with torch.inference_mode():
            with model.trace(input_ids=ids, attention_mask=mask, use_cache=False) as tracer:
                for e, io in envoys:
                    saved.append((e.input if io == "input" else e.output).save())
                tracer.stop()     # as neurolens does: nothing after the last saved site runs
        return saved
    return run


def case(lm, label: str, batch: int, seq: int, reps: int, warmup: int = 1,
         control: bool = False) -> Case:
    """neurolens capture / nnsight trace+save of the same hook_post sites (same token ids).

    ``control``: also time neurolens against itself with the same protocol (an A/A ratio: how
    far from 1.00 the measurement's own noise moves a ratio of two equal things)."""
    ids, mask, rows, _, sites = setup(lm, batch, seq, seed=2)
    theirs = nnsight_capture(lm, ids, mask, sites)

    def ours():
        lm.capture(rows, sites, batch_size=batch)

    t_ours, t_nn = alternate(ours, theirs, reps, warmup)
    r = t_ours / t_nn
    detail = {}
    if control:
        t_a, t_b = alternate(ours, ours, reps, warmup)
        detail["a_a_ratio"] = round(t_a / t_b, 4)
        detail["note"] = ("a_a_ratio: neurolens against itself, same protocol (the "
                          "measurement's own noise)")
    return Case(f"vs nnsight ({label}, {batch}x{seq} tokens)", t_ours, t_nn, r, "<= 1.00",
                check(r, "<= 1.00"), detail=detail)
