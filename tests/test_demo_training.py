"""The demo-model training script keeps working (a few steps of a tiny config)."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from neurolens.demo import corpus
from neurolens.demo.train_lm import main


def test_tiny_training_run_saves_a_loadable_llama(tmp_path):
    assert main(["--tiny", "--out", str(tmp_path / "m")]) == 0
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert m.config.model_type == "llama"
    s = "Compute: 47+38=85\n"
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == s
    assert [tok.decode([i]) for i in ids[-4:]] == ["=", "8", "5", "\n"]  # digits are single tokens
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["args"]["steps"] == 3


def test_corpus_never_trains_on_heldout_items():
    stream = corpus.TrainingStream(seed=0)
    sets = corpus.build_prompt_sets(seed=5, per_split=50)
    held_arith = {r["prompt"] + r["answer"] for r in sets["arithmetic"] if r["split"] == "eval"}
    held_secret = {r["prompt"] for r in sets["refusal"] if r["split"] == "eval"}
    text = "".join(stream.document(2000) for _ in range(300))
    assert not any(h + "\n" in text for h in held_arith)
    assert not any(h in text for h in held_secret)
    assert all(r["answer"] == corpus.REFUSAL for r in sets["refusal"])
    assert {r["skill"] for rows in sets.values() for r in rows} == {
        "arithmetic", "comprehension", "code", "refusal", "benign"}
