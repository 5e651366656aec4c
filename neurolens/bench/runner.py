"""Which cases ``neurolens bench`` runs, at which sizes (``quick``: tiny ones), under which key
(``--only``)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict

from neurolens.bench.measure import Case
from neurolens.bench.models import load_demo, random_gpt2
from neurolens.bench.report import fmt_case, machine


def run(quick: bool = False, only: list[str] | None = None, log=print,
        model: str | None = None) -> dict:
    """Run the cases; ``model`` replaces the demo model in the cases that use it."""
    # the case modules are imported here, not with the package: two of them also run as
    # ``python -m`` (a module imported with its package would run twice)
    from neurolens.bench.cases import attention
    from neurolens.bench.cases import (attribution, capture_overhead, edited_generation, gui,
                                       gui_wide, interactive, large_capture, neuron_index, pca,
                                       snn, sparse_decoding, topk, vs_nnsight)
    cases: list[Case] = []
    errors: dict[str, str] = {}

    def demo():
        return load_demo(model)

    def want(key):
        return not only or any(key.startswith(o) for o in only)

    def attempt(key, fn):
        if not want(key):
            return
        log(f"bench: {key}…")
        try:
            out = fn()
            for c in (out if isinstance(out, list) else [out]):
                cases.append(c)
                log(f"  {c.name}: {fmt_case(c)}")
        except Exception as e:  # noqa: BLE001 - a failing case is reported, not fatal
            errors[key] = f"{type(e).__name__}: {e}"
            log(f"  failed: {errors[key]}")

    reps = 3 if quick else 7
    if quick:
        attempt("capture", lambda: capture_overhead.case(random_gpt2(2, 64), "gpt2 2x64", 2, 16,
                                                         reps))
    else:
        attempt("capture", lambda: capture_overhead.case(random_gpt2(12, 512), "gpt2 12x512",
                                                         16, 128, reps))
        attempt("capture-demo", lambda: capture_overhead.case(demo(), "demo model", 16, 128,
                                                              reps))
    attempt("interactive", lambda: interactive.case(demo(), 20 if quick else 200))
    if quick:
        attempt("nnsight", lambda: vs_nnsight.case(random_gpt2(2, 64), "gpt2 2x64", 2, 16, 3,
                                                   control=True))
    else:
        attempt("nnsight", lambda: vs_nnsight.case(random_gpt2(12, 512), "gpt2 12x512", 16,
                                                   128, 2 * reps + 1, control=True))
        attempt("nnsight-interactive", lambda: vs_nnsight.case(demo(), "demo model", 1, 16,
                                                               200, warmup=5))
    if quick:
        attempt("edited-generation", lambda: edited_generation.case(demo(), 2, 4, 1))
        attempt("sparse-decoding", lambda: sparse_decoding.case(2, 64, 256, 4, 2))
        attempt("topk", lambda: topk.case(16, 256, 3))
    else:
        attempt("edited-generation", lambda: edited_generation.case(demo(), 8, 64, 3))
        attempt("sparse-decoding", lambda: sparse_decoding.case(8, 1024, 4096, 64, 3))
        attempt("topk", lambda: topk.case(2048, 16384, reps))
    attempt("pca", lambda: pca.case(500 if quick else 10_000, 64 if quick else 2048, reps))
    with tempfile.TemporaryDirectory() as tmp:
        attempt("large-capture", lambda: large_capture.case(2_048 if quick else 200_064, tmp,
                                                            model))
    attempt("attribution", lambda: attribution.cases(demo(), 4 if quick else 32,
                                                     1 if quick else reps, exact=not quick))
    attempt("index", lambda: neuron_index.throughput(demo(), 2_000 if quick else 200_000,
                                                     1 if quick else 3))
    if not quick:
        attempt("index-memory", lambda: neuron_index.memory(1_000_000, model))
    if quick:
        attempt("attention-patterns", lambda: attention.patterns(random_gpt2(2, 64), "gpt2 2x64",
                                                                 2, 16, reps))
        attempt("attention-decode", lambda: attention.decode(2, 128, 2, 384, 512, 32, 4, 1))
    else:
        attempt("attention-patterns", lambda: attention.patterns(demo(), "demo model", 8, 128,
                                                                 reps))
        attempt("attention-decode", lambda: attention.decode())   # 4,096 context, k = 256
        # a longer decode: the sparse step's transposed key copy is built from step 33 on
        attempt("attention-decode-long", lambda: attention.decode(steps=128))
    attempt("snn", lambda: snn.cases(quick))
    attempt("gui", lambda: gui.case(2 if quick else 16, 4 if quick else 96, model))
    attempt("gui-wide", lambda: gui_wide.case(quick))     # 32 x 14,336 (Llama-3-8B widths)
    attempt("logit-lens-256k", lambda: gui_wide.lens_case(quick))
    return {"machine": machine(), "quick": quick, "cases": [asdict(c) for c in cases],
            "errors": errors}
