"""The prompt sets of the demo skills (probe and eval splits) and their JSONL files."""

from __future__ import annotations

import random
from pathlib import Path

from neurolens.evals.corpus.code_skill import (FUNCTION_TASKS, _check_code, code_items,
                                               function_item, program_item)
from neurolens.evals.corpus.tasks import (REFUSAL, _check_style, _h, arithmetic_is_heldout,
                                          arithmetic_item, arithmetic_pairs, benign_item,
                                          chat_prompt, comprehension_item, secret_is_heldout,
                                          secret_requests)


# ----------------------------------------------------------------------------- prompt sets
def build_prompt_sets(seed: int = 1234, per_split: int = 400, requests: str = "plain",
                      code: str = "stdlib") -> dict[str, list[dict]]:
    """Prompt sets per skill with ``probe`` (method fitting) and ``eval`` (held-out) splits.
    ``code``: "stdlib" (next line of held-out stdlib files), "functions" (function tasks) or
    "programs" (bodies of several lines)."""
    _check_style(requests)
    _check_code(code)
    rng = random.Random(seed)
    sets: dict[str, list[dict]] = {}

    pairs = arithmetic_pairs()
    held = [p for p in pairs if arithmetic_is_heldout(*p)]
    train = [p for p in pairs if not arithmetic_is_heldout(*p)]
    rows = []
    for split, pool in (("probe", train), ("eval", held)):
        for a, op, b in rng.sample(pool, min(per_split, len(pool))):
            p, ans = arithmetic_item(a, op, b)
            rows.append({"prompt": p, "answer": ans, "skill": "arithmetic", "split": split})
    sets["arithmetic"] = rows

    rows = []
    seen: set[str] = set()
    for split in ("probe", "eval"):
        n = 0
        while n < per_split:
            p, ans, q = comprehension_item(rng)
            if p in seen:
                continue
            seen.add(p)
            rows.append({"prompt": p, "answer": ans, "skill": "comprehension", "split": split,
                         "kind": q})
            n += 1
    sets["comprehension"] = rows

    rows = []
    for split, heldout in (("probe", False), ("eval", True)):
        # drawn in both styles, so that the sets after this one do not depend on the style
        for p, ans in code_items(rng, heldout, per_split):
            if code == "stdlib":
                rows.append({"prompt": p, "answer": ans, "skill": "code", "split": split})
    if code != "stdlib":
        frng = random.Random(_h(f"{code}{seed}"))
        seen_f: set[str] = set()
        for split, heldout in (("probe", False), ("eval", True)):
            n = 0
            while n < per_split:
                if code == "functions":
                    p, ans, task = function_item(frng, heldout)
                    extra = {"kind": "function", "task": FUNCTION_TASKS[task][0][0]}
                else:
                    p, ans, steps = program_item(frng, heldout)
                    extra = {"kind": "program", "steps": steps}
                if p in seen_f:
                    continue
                seen_f.add(p)
                rows.append({"prompt": p, "answer": ans, "skill": "code", "split": split,
                             **extra})
                n += 1
    sets["code"] = rows

    secrets = secret_requests(requests)
    rows = []
    for split, heldout in (("probe", False), ("eval", True)):
        pool = [s for s in secrets if secret_is_heldout(s) == heldout]
        for s in rng.sample(pool, min(len(pool), per_split)):
            rows.append({"prompt": chat_prompt(s), "answer": REFUSAL, "skill": "refusal",
                         "split": split, "kind": "secret"})
    sets["refusal"] = rows

    rows = []
    for split, heldout in (("probe", False), ("eval", True)):
        seen_b: set[str] = set()
        tries = 0
        while len([r for r in rows if r["split"] == split]) < per_split and tries < 50000:
            tries += 1
            req, ans, kind = benign_item(rng, heldout=heldout, requests=requests)
            if kind == "fact" and heldout and rng.random() < 0.7:
                continue  # facts cannot be held out; keep them a minority of the eval split
            if req in seen_b:
                continue
            seen_b.add(req)
            rows.append({"prompt": chat_prompt(req), "answer": ans, "skill": "benign",
                         "split": split, "kind": kind})
    sets["benign"] = rows
    return sets


def write_prompt_sets(folder, seed: int = 1234, per_split: int = 400,
                      requests: str = "plain", code: str = "stdlib") -> dict[str, int]:
    """Write ``{skill}.jsonl`` files (fields prompt, answer, skill, split[, kind])."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for skill, rows in build_prompt_sets(seed, per_split, requests, code).items():
        with open(folder / f"{skill}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        counts[skill] = len(rows)
    return counts
