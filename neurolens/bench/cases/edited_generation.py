"""Edited generation: tokens/s with a prune, a gate (Key Space Detection) and an adjust
(Neuron Adjust) edit against no edits."""

from __future__ import annotations

import statistics
import time

from neurolens.bench.measure import Case, check
from neurolens.spec.sites import site_name


def tokens_per_s(lm, prompts, edits, new_tokens) -> float:
    t = time.perf_counter()
    outs = lm.generate(prompts, edits=edits, max_new_tokens=new_tokens, ignore_eos=True,
                       batch_size=len(prompts))
    dt = time.perf_counter() - t
    return sum(len(o.token_ids) for o in outs) / dt


def case(lm, batch: int, new_tokens: int, reps: int) -> list[Case]:
    """Tokens/s with a prune, a gate (KSD) and an adjust (NA) edit vs no edits."""
    from neurolens.evals.skills import load_prompt_set
    from neurolens.methods import key_space, neuron_adjust
    from neurolens.spec.edits import EditSet, Prune
    arith = [r["prompt"] for r in load_prompt_set("arithmetic", "probe", limit=64)]
    other = [r["prompt"] for r in load_prompt_set("comprehension", "probe", limit=64)]
    width = lm.sites()["blocks.0.mlp.hook_post"]
    # the gate as `reproduce` fits it: the layer chosen to keep the other set out of the cube
    gate = key_space.fit(lm, arith, alpha=2.0, layer="auto", keep=other)[0]
    # prompts the gate lets through: it must check every token, not abstain (an abstained
    # row stops early and would make tokens/s meaningless)
    outs = lm.generate(other, edits=gate, max_new_tokens=new_tokens, ignore_eos=True,
                       batch_size=len(other))
    prompts = [p for p, o in zip(other, outs) if not o.abstained][:batch]
    if not prompts:
        raise RuntimeError("the gate abstains on every comprehension prompt: no row to time")
    prompts = (prompts * batch)[:batch]
    edits = {
        "prune": EditSet([Prune(site_name(l, "mlp.hook_post"), list(range(0, width, 50)))
                          for l in range(lm.n_layers)]),
        "gate": gate,
        "adjust": neuron_adjust.fit(lm, arith, other, p=0.03)[0],
    }
    budgets = {"prune": ">= 0.90", "gate": ">= 0.90", "adjust": ">= 0.80"}
    out = []
    for name, es in edits.items():
        base, ed = [], []
        tokens_per_s(lm, prompts, es, 4)
        for _ in range(reps):
            base.append(tokens_per_s(lm, prompts, None, new_tokens))
            ed.append(tokens_per_s(lm, prompts, es, new_tokens))
        b, e = statistics.median(base), statistics.median(ed)
        out.append(Case(f"edited generation: {name} (batch {batch}, {new_tokens} tokens)",
                        e, b, e / b, budgets[name], check(e / b, budgets[name]),
                        unit="tok/s"))
    return out
