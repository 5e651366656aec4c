"""The shipped demo model: standard HF layout, the default model, and its skill targets."""

import json

import pytest

from conftest import needs_demo

pytestmark = needs_demo
from transformers import AutoModelForCausalLM, AutoTokenizer

import neurolens as nl
from neurolens.evals import skills
from neurolens.resources import model_path


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
    assert main(["eval", "--skill", "arithmetic", "--limit", "20", "--json", "--quiet"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["skills"]["arithmetic"]["n"] == 20 and 0 <= d["skills"]["arithmetic"][
        "exact_match"] <= 1
