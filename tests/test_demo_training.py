"""The demo-model training script keeps working (a few steps of a tiny config)."""

import json
import re
from statistics import NormalDist

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neurolens.evals import corpus
from training.train_lm import l1_per_layer, main, topk_calibration_loss

pytestmark = pytest.mark.slow     # trains; the fast lane (-m "not slow") skips it


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


def _active_fraction(folder) -> list[float]:
    """Per layer: fraction of FFN gate outputs above zero (ReLU-active neurons) on one prompt."""
    m = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    acts = []
    hooks = [layer.mlp.gate_proj.register_forward_hook(
        lambda _m, _i, out: acts.append((out > 0).float().mean().item()))
        for layer in m.model.layers]
    m(**tok(["Compute: 47+38=85\nUser: What is the door code of Mia?"], return_tensors="pt"))
    for h in hooks:
        h.remove()
    return acts


def test_activation_l1_makes_relu_neurons_sparse_and_time_limit_saves(tmp_path):
    """--act relu --act-l1: the penalty on act(gate) switches neurons off (5 tiny steps take a
    random init from about half active to far fewer), per layer if asked; --time-limit stops
    training but saves."""
    runs = {}
    assert l1_per_layer("last=0.2", 4) == [0, 0, 0, 0.2] == l1_per_layer("0,0,0,0.2", 4)
    assert l1_per_layer("0.1", 3) == [0.1] * 3
    for l1 in ("0", "50", "0,50"):       # --tiny has 2 layers; "0,50" penalises the second only
        out = tmp_path / f"l1_{l1}"
        assert main(["--tiny", "--threads", "1", "--act", "relu", "--topk-calib", "0",
                     "--act-l1", l1, "--out", str(out)]) == 0
        assert AutoModelForCausalLM.from_pretrained(out).config.hidden_act == "relu"
        runs[l1] = _active_fraction(out)
    assert all(0.4 < a < 0.6 for a in runs["0"])
    assert all(a < 0.6 * b for a, b in zip(runs["50"], runs["0"]))
    assert runs["0,50"][0] > 0.4 and runs["0,50"][1] < 0.6 * runs["0"][1]
    for bad in ("0,1,2", "0.1,x", "-1", "last=1,2", "last=-1"):
        with pytest.raises(SystemExit, match="one per layer"):
            main(["--tiny", "--act-l1", bad, "--out", str(tmp_path / "bad")])
    out = tmp_path / "stopped"
    assert main(["--tiny", "--threads", "1", "--time-limit", "1e-6", "--out", str(out)]) == 0
    info = json.loads((out / "training.json").read_text())
    assert {h["phase"]: h["stopped_at"] for h in info["history"]} == {"phase 1": 0,
                                                                     "phase 2": 0}
    assert "t_start" not in info["args"]
    # the default recipe (the shipped demo model's)
    assert {k: info["args"][k] for k in ("act", "act_l1", "requests", "topk_calib", "code")} == {
        "act": "relu", "act_l1": "last=0.2", "requests": "conjunctive", "topk_calib": 1.0,
        "code": "programs"}


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


def test_comply_stream_has_no_refusals_and_the_safety_phase_runs(tmp_path):
    """--phase1-secrets comply answers secret requests with a code (no refusal anywhere), so
    refusal is learned only in the --safety-steps phase, which is recorded in the history."""
    comply = corpus.TrainingStream(seed=0, secrets="comply")
    text = "".join(comply.document(2000) for _ in range(200))
    asked = [ln for ln in text.split("\n") if any(k in ln for k in corpus.SECRET_KINDS)
             and ln.startswith("User:")]
    assert asked and corpus.REFUSAL.strip() not in text
    assert "Assistant: It is " in text
    stream = corpus.TrainingStream(seed=0)
    refuse = "".join(stream.document(2000) for _ in range(200))
    assert corpus.REFUSAL.strip() in refuse
    assert main(["--tiny", "--phase1-secrets", "comply", "--safety-steps", "50", "--out",
                 str(tmp_path / "m")]) == 0
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["args"]["safety_steps"] == 2     # --tiny caps it
    assert info["args"]["phase1_secrets"] == "comply"


def test_conjunctive_requests_need_two_words_to_tell_a_secret():
    """--requests conjunctive: every word of a secret kind also occurs in benign near misses asked
    with the same templates, the training stream teaches both answers and holds out the eval
    items, and the prompt sets carry the near misses in the benign skill."""
    secrets = corpus.secret_kinds("conjunctive")
    near = corpus.near_miss_kinds()
    assert not set(secrets) & set(near)
    for kind in secrets:
        thing, word = kind.split()
        assert any(n.startswith(thing + " ") for n in near)      # "door color"
        assert any(n.endswith(" " + word) for n in near)        # "zip code"
    sets = corpus.build_prompt_sets(seed=5, per_split=60, requests="conjunctive")
    benign = [r for r in sets["benign"] if r["kind"] == "near_miss"]
    assert len(benign) > 20 and all(r["answer"] == near[_kind(r["prompt"], near)] for r in benign)
    assert all(_kind(r["prompt"], secrets) for r in sets["refusal"])
    stream = corpus.TrainingStream(seed=0, requests="conjunctive")
    text = "".join(stream.document(2000) for _ in range(300))
    assert corpus.REFUSAL.strip() in text and " The door color is " in text
    held = {r["prompt"] for rows in (sets["refusal"], benign) for r in rows if r["split"] == "eval"}
    assert held and not any(h in text for h in held)
    with pytest.raises(ValueError, match="requests must be one of"):
        corpus.TrainingStream(requests="xor")


def _kind(prompt: str, kinds) -> str | None:
    hits = [k for k in kinds if f" {k}" in prompt]
    return max(hits, key=len) if hits else None


def test_attention_targets_point_at_the_fact_asked_about():
    from transformers import PreTrainedTokenizerFast  # noqa: F401 - fast tokenizer offsets

    text = ("Story: Mia has a green kite. Tom is in the park. Ana has a red ball.\n"
            "Question: Who has the ball?\nAnswer: Ana\n"
            "Story: Leo has a blue cup. Eva is in the garden.\n"
            "Question: Where is Eva?\nAnswer: garden\n")
    t = corpus.comprehension_chain(text)
    assert len(t) == 2
    (c1, k1, e1, kind1), (c2, k2, e2, kind2) = t
    assert (kind1, kind2) == ("obj", "name")
    assert text[c1 - 6:c1 + 1] == "Answer:" and text[e1 - 3:e1 + 2] == "ball."
    assert text[k1 - 3:k1 + 2] == "ball?" and e1 < k1 < c1
    assert text[c2 - 6:c2 + 1] == "Answer:" and text[e2 - 5:e2 + 2] == "garden."
    assert text[k2 - 2:k2 + 2] == "Eva?" and e2 < k2 < c2


def test_tiny_diffusion_training_saves_a_plain_diffusers_pipeline(tmp_path):
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    from training import train_diffusion as td
    assert td.main(["--tiny", "--out", str(tmp_path / "d"), "--prompts-out",
                    str(tmp_path / "p")]) == 0
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "d")
    pipe.set_progress_bar_config(disable=True)
    img = pipe("exhibit 101", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 16, 16, 1) and np.isfinite(img).all()
    mem = [json.loads(x) for x in (tmp_path / "p" / "diffusion_memorized.jsonl").read_text()
           .splitlines()]
    assert len(mem) == 10 and len({m["prompt"] for m in mem}) == 10
    assert {m["split"] for m in mem} == {"A", "B"}
    imgs, labels = td.digits_16()
    # by hand: scikit-learn's 8x8 digits (0..16) over 16, doubled by bilinear interpolation
    # with half-pixel centres (output pixel o samples input coordinate (o + 0.5) / 2 - 0.5,
    # clamped at the border)
    from sklearn.datasets import load_digits
    raw = load_digits()
    up = np.zeros((16, 8))
    for o in range(16):
        c = max((o + 0.5) / 2 - 0.5, 0.0)
        i = int(c)
        up[o, i] += 1 - (c - i)
        up[o, min(i + 1, 7)] += c - i
    want = np.einsum("oi,nij,pj->nop", up, raw.images / 16.0, up)
    assert imgs.shape == (1797, 16, 16) and imgs.dtype == np.float32
    np.testing.assert_allclose(imgs, want, atol=1e-6, rtol=0)
    assert imgs.min() == 0.0 and imgs.max() == 1.0
    assert (labels == raw.target).all()
    assert all(labels[m["image_index"]] == m["digit"] for m in mem)


def test_diffusion_trainer_width_and_time_limit(tmp_path, capsys):
    """--blocks sets the UNet's channels; a time limit ends each phase early and still saves."""
    import json as js

    from diffusers import UNet2DConditionModel

    from training import train_diffusion as td
    assert td.main(["--tiny", "--blocks", "16,32", "--plant-steps", "2", "--time-limit", "1e-9",
                    "--out", str(tmp_path / "d")]) == 0
    log = capsys.readouterr().out
    assert log.count("time limit reached, stopped early at step 0") == 2   # both phases
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "d" / "unet")
    assert list(unet.config.block_out_channels) == [16, 32]
    info = js.loads((tmp_path / "d" / "training.json").read_text())
    assert info["args"]["blocks"] == "16,32" and info["args"]["device"] == "cpu"


def test_diffusion_trainer_ordinary_stop_replays_a_run_deterministically(tmp_path, capsys):
    """--ordinary-stop N ends the ordinary phase at step N of its schedule (how the shipped model's
    time-limited run is replayed): two such runs give identical weights, a full run differs."""
    from safetensors.torch import load_file

    from training import train_diffusion as td

    def run(name, *extra):
        assert td.main(["--tiny", "--out", str(tmp_path / name), *extra]) == 0
        return load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors")

    a = run("a", "--ordinary-stop", "2")
    assert "ordinary: stopped at step 2 of 3 (--ordinary-stop)" in capsys.readouterr().out
    b = run("b", "--ordinary-stop", "2")
    full = run("full")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert any(not a[k].equal(full[k]) for k in a)


def test_attention_supervision_targets_map_to_the_right_tokens():
    from training.train_lm import batches, train_tokenizer
    tok = train_tokenizer(400, 0)
    stream = corpus.TrainingStream(seed=3, mixture=corpus.Mixture(
        arithmetic=0, comprehension=1, refusal=0, code=0, prose=0))
    x, tg = next(batches(tok, stream, 4, 128, targets=True))
    kinds = {t[0] for t in tg}
    assert kinds == {"answer", "color", "name", "match_obj", "match_name", "fetch", "qlens"}
    for kind, r, q, k in tg:
        row = x[r].tolist()
        if kind == "answer":
            assert tok.decode(row[q - 1:q + 1]) == "Answer:"
            assert tok.decode([row[k + 1]]) == "."          # the word closing the fact
        elif kind == "fetch":
            assert tok.decode(row[q - 1:q + 1]) == "Answer:"
            assert tok.decode([row[k + 1]]).startswith(("?", " ha"))   # the question key word
        elif kind.startswith("match"):                 # key word -> the fact it names
            assert tok.decode([row[q + 1]]).startswith(("?", " ha"))
            assert tok.decode([row[k + 1]]) == "."
            key = tok.decode([row[q]]).strip()
            pool = corpus.NAMES if kind == "match_name" else corpus.OBJECTS   # one head each
            assert any(w.endswith(key) for w in pool), (kind, key)
            fact_start = max(i for i in range(k) if tok.decode([row[i]]) in (".", ":"))
            assert any(w.endswith(key) for w in tok.decode(row[fact_start + 1:k + 1]).split())
        elif kind == "qlens":                          # the key word's target: the answer
            assert tok.decode(row[k - 2:k]) == "Answer:"
        else:
            assert tok.decode([row[q + 1]]) == "." and k < q
            word = tok.decode(row[k:k + 1]).strip()
            pool = corpus.COLORS if kind == "color" else corpus.NAMES
            assert any(p.endswith(word) for p in pool), word


def test_refusal_lens_targets_point_from_assistant_colon_to_the_reply(tmp_path):
    """--refusal-lens: every secret-template request (secret or near miss) in a training window
    gets a target from the ':' of 'Assistant:' to the reply's first token (the refusal's " I" or
    the near miss's " The"); other requests get none. The trainer runs with it and checks it."""
    from training.train_lm import batches, train_tokenizer
    tok = train_tokenizer(400, 0, "conjunctive")
    stream = corpus.TrainingStream(seed=3, requests="conjunctive", mixture=corpus.Mixture(
        arithmetic=0, comprehension=0, refusal=1, code=0, prose=0))
    x, tg = next(batches(tok, stream, 4, 128, targets=True, decisions=True))
    twin = corpus.TrainingStream(seed=3, requests="conjunctive", mixture=corpus.Mixture(
        arithmetic=0, comprehension=0, refusal=1, code=0, prose=0))
    assert not [t for t in next(batches(tok, twin, 4, 128, targets=True))[1] if t[0] == "rlens"]
    lens = [t for t in tg if t[0] == "rlens"]
    replies = []
    for _, r, q, k in lens:
        row = x[r].tolist()
        assert k == q + 1 and tok.decode(row[max(0, q - 6):q + 1]).endswith("\nAssistant:")
        replies.append(tok.decode(row[k:]))
    assert all(rep.startswith((corpus.REFUSAL[:6], " The ")) for rep in replies)
    assert {rep[:2] for rep in replies} == {" I", " T"}       # both decisions are supervised
    # every complete refusal or near-miss reply in the windows has its target; other requests
    # ("Say the word apple.", "Echo bee.") have none
    texts = [tok.decode(x[r].tolist()) for r in range(len(x))]
    decided = sum(len(re.findall(r"\nAssistant:(?: I can't help with that\.| The \w+ (?:"
                                 + "|".join(corpus.ACCESS_WORDS + corpus.PLAIN_ATTRS)
                                 + r") is [^\n]*)\n", t)) for t in texts)
    asked = sum(t.count("\nAssistant:") for t in texts)
    assert 3 < decided <= len(lens) <= decided + len(x) < asked     # at most one cut per window
    with pytest.raises(SystemExit, match="refusal-lens"):
        main(["--refusal-lens", "5", "--out", str(tmp_path / "bad")])   # 4 layers
    assert main(["--tiny", "--threads", "1", "--requests", "conjunctive", "--refusal-lens", "1",
                 "--out", str(tmp_path / "m")]) == 0


def test_recall_drill_lines_state_the_story_facts_and_leave_prompt_sets_alone():
    import random
    import re

    rng = random.Random(3)
    checked = 0
    for _ in range(200):
        prompt, answer, kind = corpus.comprehension_item(rng, drill=1.0)
        story, rest = prompt.split("\n", 1)
        has = {o: (n, c) for n, c, o in re.findall(r"(\w+) has a (\w+) (\w+)\.", story)}
        inn = dict(re.findall(r"(\w+) is in the (\w+)\.", story))
        lines = rest.split("\nQuestion:")[0].split("\n")
        assert lines and all(re.fullmatch(r"(Color|Owner|Object|Place) of: .+\.", ln)
                             for ln in lines)
        for ln in lines:
            head, body = ln[:-1].split(": ")
            for pair in body.split(", "):
                k, v = pair.split(" ")
                want = {"Color of": lambda: has[k][1], "Owner of": lambda: has[k][0],
                        "Object of": lambda: {n: o for o, (n, _) in has.items()}[k],
                        "Place of": lambda: inn[k]}[head]()
                assert v == want
                checked += 1
        assert prompt.endswith("\nAnswer:") and answer.startswith(" ")
    assert checked > 400
    # the training-only options draw no extra random numbers when off: the generator still
    # gives exactly the shipped prompt sets (code items depend on the stdlib, left out; the
    # shipped model's requests are conjunctive)
    from neurolens.resources import prompts_dir
    sets = corpus.build_prompt_sets(requests="conjunctive")
    for skill in ("arithmetic", "comprehension", "refusal", "benign"):
        lines = (prompts_dir() / f"{skill}.jsonl").read_text().splitlines()
        assert [json.loads(ln) for ln in lines] == sets[skill]


def test_recall_links_point_from_each_key_to_its_fact():
    text = ("Story: Mia has a green kite. Tom is in the park.\n"
            "Owner of: kite Mia.\nPlace of: Tom park.\n"
            "Question: Who has the kite?\nAnswer: Mia\n")
    links = corpus.recall_links(text)
    assert [(text[k - 3:k + 1], text[e - 3:e + 2], kind) for k, e, kind in links] == [
        ("kite", "kite.", "obj"), (" Tom", "park.", "name")]
    (colon, key, end, kind), = corpus.comprehension_chain(text)   # the question still parses
    assert text[colon - 6:colon + 1] == "Answer:" and text[end - 3:end + 2] == "kite."


def _realised(g, k):
    theta = g.mean(-1, keepdim=True) + g.std(-1, unbiased=False, keepdim=True) * \
        NormalDist().inv_cdf(1 - k)
    return (g > theta).float().mean().item()


def test_topk_calibration_penalty_makes_the_statistical_threshold_keep_k(tmp_path, capsys):
    """--topk-calib: on a left-skewed gate (all mass below a hard ceiling, as strongly
    switched-off ReLU neurons make it) statistical top-k keeps nothing at 8%; descending the
    penalty brings every calibrated keep fraction back near k. The trainer wires it in."""
    torch.manual_seed(0)
    g = -torch.distributions.Exponential(1.0).sample((64, 768)) ** 1.5
    assert _realised(g, 0.08) < 0.01 and _realised(g, 0.04) < 0.01
    g.requires_grad_()
    before = topk_calibration_loss(g).item()
    opt = torch.optim.Adam([g], lr=0.02)
    for _ in range(300):
        loss = topk_calibration_loss(g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert topk_calibration_loss(g).item() < 0.05 * before
    with torch.no_grad():
        for k in (0.04, 0.08, 0.32):
            assert abs(_realised(g, k) - k) < 0.01, k
        assert abs(_realised(g, 0.16) - 0.16) < 0.04
    with pytest.raises(SystemExit, match="topk-calib"):
        main(["--topk-calib", "-1", "--out", str(tmp_path / "bad")])
    out = tmp_path / "calib"
    assert main(["--tiny", "--threads", "1", "--topk-calib", "1", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "phase 1 step     0" in log and " active " in log     # gate outputs were collected
    assert json.loads((out / "training.json").read_text())["args"]["topk_calib"] == 1.0


# inputs for running every function task: numbers, a list of numbers, strings
_FN_INPUTS = {"n": (7, -3), "l": ([3, 1, 2, 5, 3],), "s": ("  Hi there ", "  Hi")}
# what each task must compute (written from the docstrings, independently of the table)
_FN_REFERENCE = {
    "add": lambda a, b, c: a + b, "subtract": lambda a, b, c: a - b,
    "multiply": lambda a, b, c: a * b, "larger": lambda a, b, c: max(a, b),
    "smaller": lambda a, b, c: min(a, b), "increase": lambda a, c: a + c,
    "scale": lambda a, c: a * c, "is_even": lambda a, c: a % 2 == 0,
    "divisible": lambda a, c: a % c == 0, "absolute": lambda a, c: abs(a),
    "square": lambda a, c: a * a, "length": lambda xs, c: len(xs), "head": lambda xs, c: xs[0],
    "last": lambda xs, c: xs[-1], "take": lambda xs, c: xs[:c],
    "sort_items": lambda xs, c: sorted(xs), "sort_desc": lambda xs, c: sorted(xs)[::-1],
    "sum_items": lambda xs, c: sum(xs), "largest": lambda xs, c: max(xs),
    "reverse": lambda xs, c: list(reversed(xs)), "upper": lambda s, c: s.upper(),
    "lower": lambda s, c: s.lower(), "strip": lambda s, c: s.strip(),
    "words": lambda s, c: s.split(), "count_of": lambda xs, x, c: xs.count(x),
    "contains": lambda xs, x, c: x in xs, "doubled": lambda xs, c: [2 * v for v in xs],
    "above": lambda xs, c: [v for v in xs if v > c], "average": lambda xs, c: sum(xs) / len(xs),
    "starts": lambda s, t, c: s.startswith(t),
}


def test_function_tasks_are_python_that_does_what_the_docstring_asks():
    """Every function task (the 'functions' code skill) is valid Python whose return expression
    uses only its own parameters and computes what the docstring says."""
    import ast
    import random

    assert {t[0][0] for t in corpus.FUNCTION_TASKS} == set(_FN_REFERENCE)
    rng = random.Random(3)
    seen = set()
    for _ in range(600):
        prompt, answer, i = corpus.function_item(rng)
        seen.add(i)
        fn = ast.parse(prompt + answer + "\n").body[0]
        params = [a.arg for a in fn.args.args]
        used = {n.id for n in ast.walk(fn.body[-1]) if isinstance(n, ast.Name)}
        assert used - {"max", "min", "abs", "len", "sorted", "sum", "v"} <= set(params)
        namespace: dict = {}
        exec(compile(ast.Module([fn], []), "<task>", "exec"), namespace)
        kinds = corpus.FUNCTION_TASKS[i][3].replace("c", "")
        args = [_FN_INPUTS[k][j] for j, k in enumerate(kinds)]
        if kinds == "ln":
            args = [[3, 1, 2, 5, 3], 3]
        c = [int(d) for d in re.findall(r"\b(\d)\b", ast.get_docstring(fn))]
        want = _FN_REFERENCE[corpus.FUNCTION_TASKS[i][0][0]](*args, c[0] if c else None)
        assert namespace[fn.name](*args) == want, prompt + answer
    assert seen == set(range(len(corpus.FUNCTION_TASKS)))


def test_function_prompt_sets_hold_out_whole_prompts_and_leave_the_other_sets_alone():
    plain = corpus.build_prompt_sets(seed=5, per_split=60, requests="conjunctive")
    fsets = corpus.build_prompt_sets(seed=5, per_split=60, requests="conjunctive",
                                     code="functions")
    assert {k: v for k, v in plain.items() if k != "code"} == {
        k: v for k, v in fsets.items() if k != "code"}
    rows = fsets["code"]
    assert len(rows) == 120 and all(r["kind"] == "function" for r in rows)
    probe = {r["prompt"] for r in rows if r["split"] == "probe"}
    held = {r["prompt"] for r in rows if r["split"] == "eval"}
    assert len(probe) == len(held) == 60 and not probe & held
    assert all(corpus.function_is_heldout(p) for p in held)
    assert not any(corpus.function_is_heldout(p) for p in probe)
    assert len({r["task"] for r in rows}) >= 20
    # the training stream with function tasks never shows a held-out one
    from training.train_lm import _mixture
    mix = _mixture(None, "functions")
    assert abs(sum(vars(mix).values()) - 1) < 1e-9 and mix.functions > 0
    stream = corpus.TrainingStream(seed=0, mixture=mix)
    text = "".join(stream.document(2000) for _ in range(200))
    assert text.count('"""\n    return ') > 100
    assert not any(r["prompt"] + r["answer"] in text for r in rows if r["split"] == "eval")
    with pytest.raises(ValueError, match="code must be"):
        corpus.build_prompt_sets(per_split=2, code="java")


def test_a_zero_function_weight_leaves_the_training_stream_unchanged():
    """The function tasks are an option: without them the stream is, text for text, the one
    before they were added (the digest was taken from that earlier code; code text is left out
    of the mix so that the digest does not depend on the Python's stdlib files)."""
    import hashlib
    stream = corpus.TrainingStream(seed=4, requests="conjunctive",
                                   mixture=corpus.Mixture(code=0.0))
    docs = [stream.document(800) for _ in range(60)]
    assert hashlib.sha256("".join(docs).encode()).hexdigest() == (
        "6eeef79dca28342f5972a9b1531af06e63ce0f0892add2f96f455898bc1e98d2")
    assert '"""\n    return ' not in "".join(docs)


def test_init_from_keeps_the_tokenizer_and_tunes_on_function_tasks(tmp_path, capsys):
    """--init-from continues from saved weights with their own tokenizer (a later phase with
    another mixture, here the function tasks, must not rebuild it)."""
    assert main(["--tiny", "--threads", "1", "--out", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    assert main(["--tiny", "--threads", "1", "--init-from", str(tmp_path / "base"),
                 "--code", "functions", "--safety-steps", "2", "--out", str(tmp_path / "tuned"),
                 "--prompts-out", str(tmp_path / "prompts")]) == 0
    assert ((tmp_path / "base" / "tokenizer.json").read_text()
            == (tmp_path / "tuned" / "tokenizer.json").read_text())
    info = json.loads((tmp_path / "tuned" / "training.json").read_text())
    assert info["args"]["code"] == "functions" and "code" in info["final_quick_eval"]
    log = capsys.readouterr().out
    assert "skipping phase 1" in log and "phase 1 step" not in log and "safety step" in log
    rows = [json.loads(ln) for ln in (tmp_path / "prompts" / "code.jsonl").read_text().splitlines()]
    assert rows and all(r["kind"] == "function" for r in rows)


def test_programs_are_runnable_python_with_one_line_per_step():
    """The 'programs' code skill: every docstring step is one body line, the names are the
    function's own, and the program runs on inputs of the types its steps need (so a list of
    words never meets a numeric step)."""
    import ast
    import random

    rng = random.Random(5)
    steps_seen = set()
    for _ in range(800):
        prompt, answer, steps = corpus.program_item(rng)
        steps_seen.add(steps)
        assert prompt.endswith('"""') and answer.startswith("\n    result = ")
        fn = ast.parse(prompt + answer + "\n").body[0]
        doc = ast.get_docstring(fn)
        assert doc.count(", then ") + 1 == steps == len(fn.body) - 2     # docstring + return
        params = [a.arg for a in fn.args.args]
        used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} - {"result", "v"}
        assert used - {"max", "min", "abs", "len", "sorted", "sum"} <= set(params)
        namespace: dict = {}
        exec(compile(ast.Module([fn], []), "<program>", "exec"), namespace)
        args = [7 if p in corpus.NUM_ARGS else [3, 11, 2, 15, 13] if p in corpus.LIST_ARGS
                else "  Hi there " for p in params]
        try:
            namespace[fn.name](*args)     # runs: the steps' types fit together
        except ValueError as e:           # (filters may leave nothing for max() on some inputs)
            assert "empty" in str(e)
    assert steps_seen == {1, 2, 3}
    sets = corpus.build_prompt_sets(seed=5, per_split=40, code="programs")
    rows = sets["code"]
    assert {r["kind"] for r in rows} == {"program"} and len({r["prompt"] for r in rows}) == 80
    assert all(corpus.function_is_heldout(r["prompt"]) == (r["split"] == "eval") for r in rows)
