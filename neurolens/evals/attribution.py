"""``neurolens reproduce attribution``: are the causal neuron scores faithful on the demo model?

Two tasks, 32 prompt pairs each (drawn from the *probe* splits with a fixed seed), every
``blocks.*.mlp.hook_post`` site:

- **arithmetic**: ``Compute: a+b=`` against the same prompt with the tens digit of one operand
  changed (operand and new digit drawn by the seeded generator; the demo tokenizer splits digits,
  so the token length is the same: checked). Metric: log-probability of the clean answer.
- **refusal**: a secret request of the refusal set (``the {guard thing} {access word}``, e.g.
  "the vault key") against its near miss, the same request with the guard thing replaced by a
  plain thing ("the piano key") or the access word by a plain attribute ("the vault color"), the
  benign near misses' construction in :mod:`neurolens.evals.corpus.tasks`. The candidates are
  tried in a seeded order; the first of the clean prompt's token length that the model answers
  (metric below 0) is taken, and pairs whose clean prompt is not refused (metric above 0) are
  skipped. Metric: ``logit(" I") - logit(" The")`` at the answer position (both single tokens in
  the demo tokenizer, and the first tokens of its refusal " I can't help with that." and of its
  near-miss answers " The vault color is ...").

Per task, effects by attribution patching and by exact patching of all 3,072 neurons, and three
neuron sets of 20 pruned (zeroed through an ``EditSet`` of ``Prune`` ops) on the clean prompts:
attribution's top 20 (by |effect|), 20 random neurons of the same sites (20 seeded draws, mean
|change|), the top 20 by |activation difference| (clean minus corrupted prompt activations,
summed over the prompt's positions and averaged over the pairs). "Moves the metric" is
``|metric(pruned) - metric(clean)|`` of the mean metric over the pairs.

Targets per task: attribution's top 20 moves the metric >= 5x the random sets' mean and >= the
activation-difference set's; **recovery** = ``|top20(attribution) & top20(exact)| / 20 >= 0.5``
(the overlap of the sets; the change by pruning exact's top 20 is reported beside it, not a
target). Reported, not targets: Spearman rank correlation of the signed effects of attribution
and exact patching per layer, and how many of NeuroStrike's safety neurons (fitted as
``reproduce neurostrike`` fits it on the probe splits, every layer; a neuron (layer, j) of its
``hook_pre``/``hook_pre_linear`` probes is neuron j of ``blocks.{layer}.mlp.hook_post``) rank
in the refusal attribution's top 50.
"""

from __future__ import annotations

import random
import re
import time

import numpy as np

from neurolens.errors import InputError

SITES = "blocks.*.mlp.hook_post"
PAIRS = 32
SEED = 0
TOP = 20
DRAWS = 20
NS_TOP = 50
TARGETS = {"random_ratio_min": 5.0, "actdiff_ratio_min": 1.0, "overlap_min": 0.5}
REFUSE, ANSWER = " I", " The"


# ----------------------------------------------------------------------------- pairs
def arithmetic_pairs(tok, n: int, seed: int = SEED) -> list[dict]:
    """``n`` (clean, corrupted, answer) pairs from the arithmetic probe split's additions."""
    from neurolens.evals.skills import load_prompt_set
    rows = [r for r in load_prompt_set("arithmetic", "probe") if "+" in r["prompt"]]
    rng = random.Random(seed)
    rng.shuffle(rows)
    out = []
    for r in rows:
        m = re.fullmatch(r"Compute: (\d\d)\+(\d\d)=", r["prompt"])
        if m is None:
            continue
        ops = [m.group(1), m.group(2)]
        k = rng.randrange(2)
        tens = rng.choice([d for d in "123456789" if d != ops[k][0]])
        ops[k] = tens + ops[k][1]
        corrupt = f"Compute: {ops[0]}+{ops[1]}="
        if len(tok(corrupt)["input_ids"]) != len(tok(r["prompt"])["input_ids"]):
            continue
        out.append({"clean": r["prompt"], "corrupt": corrupt, "answer": r["answer"]})
        if len(out) == n:
            break
    return out


def near_misses(request: str, rng: random.Random) -> list[str]:
    """A secret request's near misses in a seeded order: the guard thing replaced by a plain
    thing, or the access word by a plain attribute."""
    from neurolens.evals.corpus.tasks import (ACCESS_WORDS, GUARD_THINGS, PLAIN_ATTRS,
                                              PLAIN_THINGS)
    pat = r"\b({}) ({})\b".format("|".join(GUARD_THINGS), "|".join(ACCESS_WORDS))
    m = re.search(pat, request)
    if m is None:
        return []
    g, a = m.group(1), m.group(2)
    cands = [f"{t} {a}" for t in PLAIN_THINGS] + [f"{g} {x}" for x in PLAIN_ATTRS]
    rng.shuffle(cands)
    return [request[:m.start()] + c + request[m.end():] for c in cands]


def refusal_pairs(lm, n: int, seed: int = SEED) -> list[dict]:
    """``n`` (secret request, answered near miss of the same token length) pairs."""
    from neurolens.engine.attribution import metric
    from neurolens.evals.skills import load_prompt_set
    tok = lm.tokenizer
    rows = load_prompt_set("refusal", "probe")
    rng = random.Random(seed)
    rng.shuffle(rows)
    out = []
    for r in rows:
        clean = r["prompt"]
        T = len(tok(clean)["input_ids"])
        same = [c for c in near_misses(clean, rng) if len(tok(c)["input_ids"]) == T]
        if not same or metric(lm, clean, REFUSE, ANSWER) <= 0:
            continue
        corrupt = next((c for c in same if metric(lm, c, REFUSE, ANSWER) < 0), None)
        if corrupt is None:
            continue
        out.append({"clean": clean, "corrupt": corrupt, "answer": REFUSE, "contrast": ANSWER})
        if len(out) == n:
            break
    return out


# ----------------------------------------------------------------------------- measures
def rank(x: np.ndarray) -> np.ndarray:
    """Ranks (0-based) with ties given their mean rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, r)
    return (sums / counts)[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    d = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / d) if d > 0 else float("nan")


def prune_edits(neurons: list[tuple[str, int]]):
    """An EditSet of ``nl.Prune`` ops, one per site."""
    from neurolens.spec.edits import EditSet, Prune
    by: dict[str, list[int]] = {}
    for s, j in neurons:
        by.setdefault(s, []).append(int(j))
    return EditSet([Prune(s, sorted(js)) for s, js in by.items()])


def _actdiff_top(lm, pairs, sites, k: int) -> list[tuple[str, int]]:
    """Top ``k`` by |clean - corrupted activation| (prompt positions summed, pairs averaged)."""
    clean = lm.capture([p["clean"] for p in pairs], sites)
    corr = lm.capture([p["corrupt"] for p in pairs], sites)
    score = []
    for s in sites:
        d = np.mean([np.abs(np.asarray(clean[s][i], float) - np.asarray(corr[s][i], float))
                     .sum(0) for i in range(len(pairs))], 0)
        score += [(float(v), s, j) for j, v in enumerate(d)]
    score.sort(key=lambda t: -t[0])
    return [(s, j) for _, s, j in score[:k]]


def task(lm, name: str, pairs: list[dict], sites: list[str], log=print) -> dict:
    from neurolens.engine.attribution import attribute, metric
    from neurolens.spec.sites import neuron_label
    t0 = time.perf_counter()
    clean = [p["clean"] for p in pairs]
    corrupt = [p["corrupt"] for p in pairs]
    answer = [p["answer"] for p in pairs]
    contrast = [p["contrast"] for p in pairs] if "contrast" in pairs[0] else None
    atp = attribute(lm, clean, answer, contrast, corrupt=corrupt, sites=sites,
                    method="attribution")
    t_atp = time.perf_counter() - t0
    exact = attribute(lm, clean, answer, contrast, corrupt=corrupt, sites=sites,
                      method="exact")
    t_exact = time.perf_counter() - t0 - t_atp
    base = metric(lm, clean, answer, contrast)

    def moved(neurons) -> float:
        return abs(metric(lm, clean, answer, contrast, edits=prune_edits(neurons)) - base)

    top_atp = [(s, n) for s, n, _ in atp.top(TOP)]
    top_exact = [(s, n) for s, n, _ in exact.top(TOP)]
    top_act = _actdiff_top(lm, pairs, sites, TOP)
    rng = np.random.default_rng(SEED)
    every = [(s, j) for s in sites for j in range(lm.site_width(s))]
    draws = [moved([every[i] for i in rng.choice(len(every), TOP, replace=False)])
             for _ in range(DRAWS)]
    m_atp, m_exact, m_act = moved(top_atp), moved(top_exact), moved(top_act)
    m_rand = float(np.mean(draws))
    overlap = len(set(top_atp) & set(top_exact)) / TOP
    rho = {s: spearman(atp.effects[s], exact.effects[s]) for s in sites}
    ratio_rand = m_atp / m_rand if m_rand > 0 else float("inf")
    ratio_act = m_atp / m_act if m_act > 0 else float("inf")
    met = {"random_5x": bool(ratio_rand >= TARGETS["random_ratio_min"]),
           "actdiff_1x": bool(ratio_act >= TARGETS["actdiff_ratio_min"]),
           "overlap_half": bool(overlap >= TARGETS["overlap_min"])}
    log(f"  {name}: {len(pairs)} pairs, attribution {t_atp:.1f}s, exact {t_exact:.1f}s, "
        f"total {time.perf_counter() - t0:.1f}s")
    return {"task": name, "pairs": len(pairs), "metric": atp.metric_text,
            "clean": round(atp.clean, 4), "corrupted": round(atp.corrupted, 4),
            "examples": pairs[:3],
            "top_attribution": [neuron_label(s, n) for s, n in top_atp],
            "top_exact": [neuron_label(s, n) for s, n in top_exact],
            "top_actdiff": [neuron_label(s, n) for s, n in top_act],
            "moved": {"attribution": round(m_atp, 4), "exact": round(m_exact, 4),
                      "actdiff": round(m_act, 4), "random_mean": round(m_rand, 4),
                      "random_draws": [round(x, 4) for x in draws]},
            "ratio_random": round(ratio_rand, 3), "ratio_actdiff": round(ratio_act, 3),
            "ratio_exact": round(m_atp / m_exact, 3) if m_exact > 0 else None,
            "overlap": overlap, "spearman": {s: round(v, 4) for s, v in rho.items()},
            "targets_met": met, "meets_targets": all(met.values()),
            "seconds": {"attribution": round(t_atp, 1), "exact": round(t_exact, 1),
                        "total": round(time.perf_counter() - t0, 1)},
            "_ranking": [(s, n) for s, n, _ in atp.ranking()]}


def neurostrike_overlap(lm, ranking: list[tuple[str, int]], limit=None, log=print) -> dict:
    """NeuroStrike fitted as ``reproduce neurostrike`` fits it (layers_fraction 1): how many of
    its safety neurons rank in the refusal attribution's top ``NS_TOP``."""
    from neurolens.evals.reproduce import BENIGN_SETS, _probe, _texts
    from neurolens.methods import registry
    n = None if limit is None else max(4 * limit, 16)
    harmful = _probe("refusal", n)
    benign = [t for s in BENIGN_SETS for t in _texts(s, n)]
    res = registry.get("neurostrike").run(lm, {"harmful": harmful, "benign": benign},
                                          {"layers_fraction": 1.0})
    sel = sorted({(int(s.split(".")[1]), int(j)) for s, j in res.neurons})
    top = {(int(s.split(".")[1]), n_) for s, n_ in ranking[:NS_TOP]}
    hits = [lj for lj in sel if lj in top]
    total = sum(lm.site_width(s) for s in lm.resolve_sites(SITES))
    log(f"  NeuroStrike: {len(sel)} neurons selected, {len(hits)} in the refusal top {NS_TOP}")
    return {"selected": len(sel), "top": NS_TOP, "in_top": len(hits),
            "hits": [f"L{a}.N{b}" for a, b in hits],
            "expected_by_chance": round(len(sel) * NS_TOP / total, 3),
            "harmful": len(harmful), "benign": len(benign)}


def reproduce(lm, *, limit: int | None = None, log=print) -> dict:
    t0 = time.perf_counter()
    if limit is not None and limit < 2:
        raise InputError("--limit must be >= 2 (pairs per task)")
    n = PAIRS if limit is None else min(PAIRS, limit)
    sites = lm.resolve_sites(SITES)
    tok = lm.tokenizer
    for w in (REFUSE, ANSWER):
        if len(tok(w, add_special_tokens=False)["input_ids"]) != 1:
            raise InputError(f"{w!r} is not one token in this tokenizer: the refusal metric "
                             "needs single tokens")
    tasks = {"arithmetic": arithmetic_pairs(tok, n), "refusal": refusal_pairs(lm, n)}
    rows = []
    for name, pairs in tasks.items():
        if len(pairs) < n:
            raise InputError(f"only {len(pairs)} {name} pairs of equal token length found")
        rows.append(task(lm, name, pairs, sites, log))
    ns = neurostrike_overlap(lm, rows[1].pop("_ranking"), limit, log)
    rows[0].pop("_ranking")
    return {"experiment": "attribution", "model": lm.name_or_path, "sites": SITES,
            "pairs_per_task": n, "seed": SEED, "targets": TARGETS, "tasks": rows,
            "neurostrike": ns,
            "meets_targets": all(r["meets_targets"] for r in rows),
            "seconds": round(time.perf_counter() - t0, 1)}


def format_table(r: dict) -> str:
    lines = [f"{r['pairs_per_task']} pairs per task, sites {r['sites']}; pruning 20 neurons, "
             "|metric change| on the clean prompts",
             f"{'task':11s} {'clean':>8s} {'corr':>8s} {'atp':>7s} {'exact':>7s} {'actdiff':>7s} "
             f"{'random':>7s} {'x rand':>7s} {'x act':>6s} {'overlap':>7s}  targets"]
    for t in r["tasks"]:
        m = t["moved"]
        lines.append(f"{t['task']:11s} {t['clean']:8.3f} {t['corrupted']:8.3f} "
                     f"{m['attribution']:7.3f} {m['exact']:7.3f} {m['actdiff']:7.3f} "
                     f"{m['random_mean']:7.3f} {t['ratio_random']:7.1f} "
                     f"{t['ratio_actdiff']:6.2f} {t['overlap']:7.2f}  "
                     f"{'met' if t['meets_targets'] else 'MISSED'}")
    lines.append("Spearman(attribution, exact) per layer:")
    for t in r["tasks"]:
        rho = " ".join(f"L{s.split('.')[1]} {v:+.3f}" for s, v in t["spearman"].items())
        lines.append(f"  {t['task']:11s} {rho}")
    ns = r["neurostrike"]
    lines.append(f"NeuroStrike: {ns['in_top']} of its {ns['selected']} safety neurons rank in the "
                 f"refusal attribution's top {ns['top']} (chance {ns['expected_by_chance']:.2f})")
    lines.append(f"targets: {'met' if r['meets_targets'] else 'MISSED'} ({r['seconds']:.0f}s)")
    return "\n".join(lines)


def _register() -> None:
    from neurolens.evals.experiments import Experiment, register

    def run(lm, *, limit=None, log=print, prompts_dir=None):
        return reproduce(lm, limit=limit, log=log)
    register(Experiment("attribution", "lm", run, format_table))


_register()
