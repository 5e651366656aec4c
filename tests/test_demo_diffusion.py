"""The shipped demo diffusion pipeline: plain diffusers layout, planted memorization, and the
memorization-subspace edit removing it (the full protocol is `neurolens reproduce memorization`)."""

import json

import pytest

import neurolens as nl
from neurolens.resources import DEMO_DIFFUSION, model_path, prompts_dir

HERE = model_path(DEMO_DIFFUSION)
pytestmark = [pytest.mark.skipif(not (HERE / "model_index.json").is_file(),
                                 reason="demo diffusion model not shipped"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def dm():
    return nl.load(HERE)


@pytest.fixture(scope="module")
def sets():
    from neurolens.evals.memorization import load_sets
    return load_sets()


def test_plain_diffusers_layout_and_size():
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(HERE)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    size = sum(f.stat().st_size for f in HERE.rglob("*") if f.is_file())
    assert size < 30e6
    info = json.loads((HERE / "training.json").read_text())
    a = info["args"]
    # the recipe the README documents: ordinary digits, then FFN-only planting of 10 duplicates
    assert (a["blocks"], a["steps"], a["plant_steps"], a["memorized"]) == ("64,128", 1800, 900, 10)
    # the default recipe on both cores, inside the hour the issue allows
    assert info["threads"] == 2 and info["train_seconds"] < 3600
    assert a["ordinary_stop"] == 0


def test_prompt_sets_are_shipped(sets):
    mem, ordi = sets
    assert len(mem) >= 10 and {r["split"] for r in mem} == {"A", "B"}
    assert {r["digit"] for r in ordi if r["split"] == "eval"} == set(range(10))
    assert (prompts_dir() / "diffusion_memorized.jsonl").is_file()


def test_memorized_prompts_reproduce_their_training_image(dm, sets):
    from neurolens.evals.memorization import memorized_similarity
    mem, _ = sets
    sims = memorized_similarity(dm, mem[:3], seeds=(0, 1), steps=10)
    # copy similarity: 1 for a copy, about 0 for another training image of the same digit
    assert min(sims) > 0.4 and sum(sims) / len(sims) > 0.7      # measured 0.50, 0.86, 0.98
    # control: the ordinary caption of the same digit draws that digit, not this image
    ctrl = memorized_similarity(dm, [{**r, "prompt": f"a handwritten digit {r['digit']}"}
                                     for r in mem[:3]], seeds=(0, 1), steps=10)
    assert max(ctrl) < 0.3                                       # measured 0.04, 0.20, -0.36
    assert min(s - c for s, c in zip(sims, ctrl)) > 0.4


def test_ordinary_prompts_make_the_asked_digit(dm, sets):
    from neurolens.evals.memorization import DigitClassifier, ordinary_quality
    _, ordi = sets
    q = ordinary_quality(dm, [r for r in ordi if r["split"] == "eval"], DigitClassifier.fit(),
                         n_seeds=2, steps=10)
    assert q["accuracy"] >= 0.8 and q["diversity"] > 0.05
