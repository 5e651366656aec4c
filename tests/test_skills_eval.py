"""Skill evaluation: the metric follows the prompt set (code: function tasks or stdlib text)."""

import json

from neurolens.evals import corpus, skills


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


def copier(lm, tokens: str):
    """Make ``lm`` (the tiny Llama, byte-level tokens) predict the token it reads for every
    byte in ``tokens``: each gets its own embedding axis, attention and MLPs write nothing, and
    the unembedding is the embedding. Its teacher-forced accuracy can then be counted by hand."""
    import torch
    hf, tok = lm.hf, lm.tokenizer
    ids = sorted({t for ch in tokens for t in tok(ch, add_special_tokens=False)["input_ids"]})
    assert len(ids) <= hf.config.hidden_size
    with torch.no_grad():
        emb = torch.zeros_like(hf.model.embed_tokens.weight)
        for k, t in enumerate(ids):
            emb[t, k] = 5.0
        hf.model.embed_tokens.weight.copy_(emb)
        hf.lm_head.weight.copy_(emb)
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return lm


def test_stdlib_code_rows_keep_token_accuracy(tmp_path, llama):
    rows = [{"prompt": p, "answer": a, "skill": "code", "split": "eval"}
            for p, a in (("x = 1\n", "\nassert x == 1\n"), ("y = 2\n", "pass\n"),
                         ("x = 1\n", "y = 2\n"))]
    copier(llama, "".join(r["prompt"] + r["answer"] for r in rows))
    _write(tmp_path, rows)
    res = skills.evaluate(llama, ["code"], folder=tmp_path)["code"]
    # an answer token is predicted right where it repeats the token before it (the prompt's
    # last one for the first): "\n|\n", "s|s", "=|=" in the first row, "s|s" in the second,
    # none in the third; one token per byte: 15 + 5 + 6 answer tokens
    assert res.primary_name == "token_accuracy" and res.primary == 4 / 26
    assert res.metrics["tokens"] == 26


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
