"""Causal scores (issue 27, item 5), side by side on the demo model's arithmetic pairs (the
``reproduce attribution`` pairs): attribution patching over every FFN neuron against the plain
forwards of the clean and corrupted prompts, and exact patching of every FFN neuron of one pair
against plain forwards of batches of 64 copies of that prompt (as many rows as it patches)."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check

SITES = "blocks.*.mlp.hook_post"


def cases(lm, n_pairs: int, reps: int, exact: bool = True) -> list[Case]:
    import torch

    from neurolens.engine.attribution import attribute
    from neurolens.evals.attribution import arithmetic_pairs
    pairs = arithmetic_pairs(lm.tokenizer, n_pairs)
    clean = [p["clean"] for p in pairs]
    corrupt = [p["corrupt"] for p in pairs]
    answer = [p["answer"] for p in pairs]
    sites = lm.resolve_sites(SITES)
    width = sum(lm.site_width(s) for s in sites)

    def ids(texts):
        return lm.encode(texts)

    enc_c, enc_x = ids(clean), ids(corrupt)

    def plain_pair():
        with torch.inference_mode():
            lm.hf(**enc_c, use_cache=False)
            lm.hf(**enc_x, use_cache=False)

    def atp():
        attribute(lm, clean, answer, corrupt=corrupt, sites=sites, method="attribution")

    t_atp, t_plain = alternate(atp, plain_pair, reps)
    r = t_atp / t_plain
    out = [Case(f"attribution patching, {len(pairs)} arithmetic pairs, {width} FFN neurons: "
                "time / plain forwards of clean + corrupted", t_atp, t_plain, r, "<= 4.0",
                check(r, "<= 4.0"), detail={"pairs": len(pairs), "neurons": width})]
    if not exact:
        return out
    one = ids([clean[0]] * 64)
    n_fwd = -(-width // 64)

    def plain_rows():
        with torch.inference_mode():
            for _ in range(n_fwd):
                lm.hf(**one, use_cache=False)

    def exact_all():
        attribute(lm, clean[0], answer[0], corrupt=corrupt[0], sites=sites, method="exact",
                  batch=64)

    def atp_one():
        attribute(lm, clean[0], answer[0], corrupt=corrupt[0], sites=sites,
                  method="attribution")

    t_exact, t_rows = alternate(exact_all, plain_rows, max(1, reps // 2), warmup=0)
    r = t_exact / t_rows
    out.append(Case(f"exact patching of all {width} FFN neurons, one pair: time / {n_fwd} "
                    "plain forwards of a batch of 64", t_exact, t_rows, r, "<= 1.0",
                    check(r, "<= 1.0"),
                    detail={"exact_s": round(t_exact, 2), "goal_s": 15.0,
                            "under_goal": t_exact < 15.0}))
    t_one, _ = alternate(atp_one, lambda: None, reps, warmup=1)
    speed = t_exact / t_one
    out.append(Case("attribution patching vs exact patching of every FFN neuron, one pair: "
                    "speed-up", t_one, t_exact, speed, ">= 10", check(speed, ">= 10"),
                    detail={"attribution_s": round(t_one, 3), "exact_s": round(t_exact, 2)}))
    return out
