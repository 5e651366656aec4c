"""Skill evaluation: the metric follows the prompt set (code: function tasks or stdlib text)."""

import json

from neurolens.demo import corpus
from neurolens.evals import skills


def _write(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_function_rows_are_scored_by_exact_match_of_the_generated_expression(tmp_path, llama):
    rows = [r for r in corpus.build_prompt_sets(per_split=8, code="functions")["code"]
            if r["split"] == "eval"]
    outs = llama.generate([r["prompt"] for r in rows], max_new_tokens=24, stop=("\n",))
    for i, (r, o) in enumerate(zip(rows, outs)):    # every other row: the model's own answer
        if i % 2 == 0:
            r["answer"] = skills.first_line(o.text)
    _write(tmp_path, rows)
    res = skills.evaluate(llama, ["code"], folder=tmp_path)["code"]
    assert res.primary_name == "exact_match" and res.primary == 0.5
    assert res.metrics["abstain_rate"] == 0.0
    assert skills.results_json({"code": res})["code"]["primary"] == "exact_match"


def test_stdlib_code_rows_keep_token_accuracy(tmp_path, llama):
    rows = [{"prompt": "x = 1\n", "answer": "y = 2\n", "skill": "code", "split": "eval"}] * 3
    _write(tmp_path, rows)
    res = skills.evaluate(llama, ["code"], folder=tmp_path)["code"]
    assert res.primary_name == "token_accuracy" and 0 <= res.primary <= 1
    assert res.metrics["tokens"] == 3 * len(llama.tokenizer("y = 2\n")["input_ids"])


def test_program_rows_are_scored_on_the_whole_body_up_to_a_blank_line(tmp_path, llama):
    rows = [r for r in corpus.build_prompt_sets(per_split=6, code="programs")["code"]
            if r["split"] == "eval"]
    outs = llama.generate([r["prompt"] for r in rows], max_new_tokens=72, stop=("\n\n",))
    for i, (r, o) in enumerate(zip(rows, outs)):
        if i % 3 == 0:                   # the model's own text up to a blank line
            r["answer"] = o.text.split("\n\n")[0].rstrip("\n")
        elif i % 3 == 1:                 # only its first line: not the whole body
            r["answer"] = skills.first_line(o.text)
            if o.text.split("\n\n")[0].rstrip("\n") == r["answer"]:
                r["answer"] += "\n    return result"
    _write(tmp_path, rows)
    res = skills.evaluate(llama, ["code"], folder=tmp_path)["code"]
    assert res.primary_name == "exact_match" and res.primary == 2 / 6


def test_answer_part_takes_a_line_or_a_body_as_the_expected_answer_has():
    text = " 85\nCompute: 1+2= 3"
    assert skills.answer_part(text, " 85") == " 85"
    body = "\n    result = a + b\n    return result"
    assert skills.answer_part(body + "\n\ndef f(x):\n", body) == body
    assert skills.answer_part(body + "\n", body) == body        # stopped before the blank line
    assert skills.answer_part("\n    result = a", body) != body  # cut short: not a match
