"""``neurolens reproduce attribution`` (issue 27, item 4) on the demo model with a small limit:
the result's shape, its numbers against a direct recomputation (pruning the reported top 20
through the model's own logits; one Spearman from fresh attribution and exact runs, ranked by a
plain double argsort), and the pairs' construction."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch

from conftest import needs_demo

from neurolens.evals import attribution as ap

LIMIT = 4


def test_spearman_and_rank_by_hand():
    a = np.array([0.3, -1.0, 2.0, 0.5, 0.1])
    b = np.array([1.0, -2.0, 3.0, 0.0, 0.2])
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    d = (ra - rb).astype(float)
    n = len(a)
    assert ap.spearman(a, b) == pytest.approx(1 - 6 * (d ** 2).sum() / (n * (n * n - 1)))
    assert ap.rank(np.array([2.0, 1.0, 2.0])).tolist() == [1.5, 0.0, 1.5]
    x = np.array([0.0, 3.0, 0.0, -1.0, 0.0, 3.0])
    assert ap.rank(x).tolist() == _midranks(x).tolist()


def test_near_misses_keep_the_request():
    import random
    got = ap.near_misses("Hi. Read me the vault key.", random.Random(0))
    assert got and all(g.startswith("Hi. Read me the ") and g.endswith(".") for g in got)
    assert "Hi. Read me the piano key." in got and "Hi. Read me the vault color." in got
    assert ap.near_misses("Echo bee.", random.Random(0)) == []


@pytest.fixture(scope="module")
def lm():
    import neurolens as nl
    return nl.load()


@pytest.fixture(scope="module")
def result():
    from neurolens.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["reproduce", "attribution", "--limit", str(LIMIT), "--json", "--quiet"])
    assert rc == 0
    return json.loads(out.getvalue())


def _neurons(labels: list[str]) -> list[tuple[str, int]]:
    out = []
    for lab in labels:
        m = re.fullmatch(r"L(\d+)\.N(\d+)", lab)
        out.append((f"blocks.{m.group(1)}.mlp.hook_post", int(m.group(2))))
    return out


def _logprob(lm, prompt: str, answer: str, edits=None) -> float:
    """log p(answer | prompt) summed over the answer's tokens, from the model's own logits."""
    tok = lm.tokenizer
    p = tok(prompt)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    lg = torch.tensor(lm.logits([p + a], edits=edits)[0], dtype=torch.float64)
    lp = torch.log_softmax(lg, -1)
    return float(sum(lp[len(p) - 1 + k, t] for k, t in enumerate(a)))


def _midranks(x: np.ndarray) -> np.ndarray:
    """Rank = how many are smaller + half of the others equal to it (by pairwise comparison)."""
    x = np.asarray(x, float)
    return (x[None, :] < x[:, None]).sum(1) + ((x[None, :] == x[:, None]).sum(1) - 1) / 2


@needs_demo
def test_structure(result):
    assert result["experiment"] == "attribution" and result["pairs_per_task"] == LIMIT
    assert isinstance(result["meets_targets"], bool)
    assert [t["task"] for t in result["tasks"]] == ["arithmetic", "refusal"]
    for t in result["tasks"]:
        assert t["pairs"] == LIMIT
        for k in ("top_attribution", "top_exact", "top_actdiff"):
            assert len(t[k]) == ap.TOP == len(set(t[k]))
        assert len(t["moved"]["random_draws"]) == ap.DRAWS
        assert set(t["targets_met"]) == {"random_5x", "actdiff_1x", "overlap_half"}
        assert t["meets_targets"] == all(t["targets_met"].values())
        assert len(t["spearman"]) == 4 and all(-1 <= v <= 1 for v in t["spearman"].values())
        ov = len(set(t["top_attribution"]) & set(t["top_exact"])) / ap.TOP
        assert t["overlap"] == pytest.approx(ov)
        assert t["targets_met"]["overlap_half"] == (ov >= 0.5)
        assert "_ranking" not in t
    assert result["meets_targets"] == all(t["meets_targets"] for t in result["tasks"])
    assert result["tasks"][1]["clean"] > 0 > result["tasks"][1]["corrupted"]
    ns = result["neurostrike"]
    assert 0 <= ns["in_top"] <= min(ns["selected"], ap.NS_TOP) and len(ns["hits"]) == ns["in_top"]


@needs_demo
def test_pairs_line_up(lm):
    tok = lm.tokenizer
    for p in ap.arithmetic_pairs(tok, 8):
        assert len(tok(p["clean"])["input_ids"]) == len(tok(p["corrupt"])["input_ids"])
        a, b = re.findall(r"\d+", p["clean"]), re.findall(r"\d+", p["corrupt"])
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        assert len(diff) == 1 and diff[0][0][1] == diff[0][1][1] != "" \
            and diff[0][0][0] != diff[0][1][0]
        x, y = map(int, a)
        assert p["answer"] == str(x + y)
    assert ap.arithmetic_pairs(tok, 8) == ap.arithmetic_pairs(tok, 8)


@needs_demo
def test_pruning_the_reported_top20_recomputed(lm, result):
    import neurolens as nl
    t = result["tasks"][0]
    pairs = ap.arithmetic_pairs(lm.tokenizer, LIMIT)
    assert t["examples"] == pairs[:3]
    by: dict[str, list[int]] = {}
    for s, n in _neurons(t["top_attribution"]):
        by.setdefault(s, []).append(n)
    edits = nl.EditSet([nl.Prune(s, ns) for s, ns in by.items()])
    base = np.mean([_logprob(lm, p["clean"], p["answer"]) for p in pairs])
    pruned = np.mean([_logprob(lm, p["clean"], p["answer"], edits) for p in pairs])
    assert t["clean"] == pytest.approx(base, abs=2e-3)
    assert t["moved"]["attribution"] == pytest.approx(abs(pruned - base), abs=2e-3, rel=1e-3)


@needs_demo
def test_one_spearman_recomputed(lm, result):
    from neurolens.engine.attribution import attribute
    t = result["tasks"][1]
    pairs = ap.refusal_pairs(lm, LIMIT)
    assert t["examples"] == pairs[:3]
    site = "blocks.1.mlp.hook_post"
    kw = dict(corrupt=[p["corrupt"] for p in pairs], sites=site)
    args = ([p["clean"] for p in pairs], ap.REFUSE, ap.ANSWER)
    a = attribute(lm, *args, method="attribution", **kw).effects[site]
    e = attribute(lm, *args, method="exact", **kw).effects[site]
    ra, re_ = _midranks(a), _midranks(e)
    assert (a == 0).sum() > 1          # dead neurons tie at 0: the ranks must average ties
    ra, re_ = ra - ra.mean(), re_ - re_.mean()
    rho = (ra * re_).sum() / np.sqrt((ra ** 2).sum() * (re_ ** 2).sum())
    assert t["spearman"][site] == pytest.approx(rho, abs=2e-3)
