"""The shipped demo model: standard HF layout, the default model, and its skill targets."""

import json

import pytest
import torch

from conftest import needs_demo

from transformers import AutoModelForCausalLM, AutoTokenizer

import neurolens as nl
from neurolens.evals import skills
from neurolens.resources import model_path

pytestmark = needs_demo


def test_loads_with_plain_transformers():
    m = AutoModelForCausalLM.from_pretrained(model_path())
    tok = AutoTokenizer.from_pretrained(model_path())
    assert m.config.model_type == "llama"
    n = sum(p.numel() for p in m.parameters())
    assert 1e6 < n < 8e6
    size = sum(f.stat().st_size for f in model_path().iterdir())
    assert size < 30e6
    assert tok.decode(tok("Compute: 47+38=")["input_ids"]) == "Compute: 47+38="


def test_is_the_default_model():
    lm = nl.load()
    assert lm.name_or_path == str(model_path()) and lm.model_type == "llama"
    out = lm.generate("Compute: 47+38=", max_new_tokens=4, stop=["\n"])
    assert out.text.strip() == "85"


@pytest.mark.slow
def test_skill_targets_on_held_out_subset():
    lm = nl.load()
    res = skills.evaluate(lm, limit=120)
    assert res["arithmetic"].primary >= 0.80
    assert res["comprehension"].primary >= 0.90
    assert res["refusal"].metrics["refusal_rate"] >= 0.95
    assert res["benign"].metrics["false_refusal_rate"] <= 0.05
    assert res["code"].primary_name == "exact_match" and res["code"].primary >= 0.80


def test_eval_cli_json(capsys):
    from neurolens.cli import main
    assert main(["eval", "--skill", "arithmetic", "--limit", "24", "--json", "--quiet"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["skills"]["arithmetic"]["n"] == 24
    # the reference: plain transformers, greedy, one prompt at a time, the first line of the
    # answer against the expected one, over the first 24 rows of the eval split (the shipped
    # model gets row 22 wrong: 23 / 24, so a scorer stuck at 1 fails too)
    from neurolens.resources import prompts_dir
    rows = [json.loads(x) for x in (prompts_dir() / "arithmetic.jsonl").read_text().splitlines()
            if x.strip()]
    rows = [r for r in rows if r["split"] == "eval"][:24]
    m = AutoModelForCausalLM.from_pretrained(model_path()).eval()
    tok = AutoTokenizer.from_pretrained(model_path())
    right = 0
    for r in rows:
        ids = tok(r["prompt"], return_tensors="pt").input_ids
        with torch.no_grad():
            out = m.generate(ids, max_new_tokens=8, do_sample=False)
        right += tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0] \
            == r["answer"]
    assert d["skills"]["arithmetic"]["exact_match"] == round(right / 24, 4)   # JSON: 4 places
