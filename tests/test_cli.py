"""CLI: the contract of DESIGN.md section 5, and one clear line + exit 2 on bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig

import neurolens as nl
from neurolens.cli import main, read_prompts
from neurolens.spec.prompts import read_prompt_rows


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def edits_file(tmp_path, edits, name="e.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"format": "neurolens.edits/1", "edits": edits}))
    return p


PRUNE = [{"op": "prune", "site": "blocks.1.mlp.hook_post", "neurons": [1, 2, 3, 4, 5, 6]}]


def test_info(capsys, tiny_dirs):
    code, out, _ = run(capsys, "info", "-m", tiny_dirs["llama"], "--json")
    assert code == 0
    d = json.loads(out)
    assert d["model_type"] == "llama" and d["n_layers"] == 2
    assert d["sites"]["blocks.1.mlp.hook_post"] == 64


def test_run_json(capsys, tiny_dirs):
    code, out, _ = run(capsys, "run", "-m", tiny_dirs["gpt2"], "--prompt", "Compute: 1+2=",
                       "--max-new-tokens", "5", "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"prompt", "output", "tokens", "logprobs"}
    assert d["prompt"] == "Compute: 1+2=" and len(d["tokens"]) == len(d["logprobs"]) <= 5


def test_capture_file_contract(capsys, tiny_dirs, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "abc"}\n\n{"prompt": "hello world"}\n')
    out = tmp_path / "cap.safetensors"
    code, _, err = run(capsys, "capture", "-m", tiny_dirs["gpt2"], "--prompts", prompts,
                       "--site", "blocks.*.mlp.hook_post", "--out", out)
    assert code == 0, err
    with safe_open(str(out), framework="numpy") as f:
        meta = f.metadata()
        assert json.loads(meta["tokens"])[0] == ["a", "b", "c"]
        assert f.get_tensor("blocks.0.mlp.hook_post/0").shape == (3, 64)
        assert f.get_tensor("blocks.1.mlp.hook_post/1").shape == (11, 64)


def test_compare_and_export(capsys, tiny_dirs, tmp_path):
    e = edits_file(tmp_path, PRUNE)
    code, out, err = run(capsys, "compare", "-m", tiny_dirs["llama"], "--edits", e,
                         "--prompt", "abc", "--json", "--max-new-tokens", "4")
    assert code == 0, err
    d = json.loads(out)
    # the CLI reports what the API computes (the API is checked against plain transformers)
    want = nl.load(tiny_dirs["llama"]).compare(["abc"], nl.EditSet.load(e),
                                               max_new_tokens=4).to_json()
    assert d["n_prompts"] == 1 and d["mean_kl"] == want["mean_kl"] and d["mean_kl"] > 1e-6
    assert d["items"][0]["kl_per_token"] == want["items"][0]["kl_per_token"]
    assert d["items"][0]["first_divergence"] == want["items"][0]["first_divergence"]
    code, out, err = run(capsys, "export", "-m", tiny_dirs["llama"], "--edits", e,
                         "--out", tmp_path / "x")
    assert code == 0 and "baked into the weights" in out
    code, out, err = run(capsys, "export", "-m", tiny_dirs["llama"], "--edits", e,
                         "--out", tmp_path / "x")
    assert code == 2 and "--force" in err


@pytest.mark.parametrize("case", ["missing_model", "malformed_json", "unknown_op",
                                  "out_of_range", "unknown_site", "pickle", "no_prompt",
                                  "bad_prompts_file", "missing_edits"])
def test_bad_input_one_line_exit_2(capsys, tiny_dirs, tmp_path, case):
    m = str(tiny_dirs["gpt2"])
    if case == "missing_model":
        argv = ["run", "-m", tmp_path / "nope", "--prompt", "x"]
        want = "model folder not found"
    elif case == "malformed_json":
        bad = tmp_path / "bad.json"
        bad.write_text("{oops")
        argv = ["run", "-m", m, "--prompt", "x", "--edits", bad]
        want = "malformed JSON"
    elif case == "unknown_op":
        argv = ["run", "-m", m, "--prompt", "x", "--edits",
                edits_file(tmp_path, [{"op": "zap", "site": "blocks.0.mlp.hook_post"}])]
        want = "edits[0].op: unknown op 'zap'"
    elif case == "out_of_range":
        argv = ["run", "-m", m, "--prompt", "x", "--edits", edits_file(
            tmp_path, [{"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [64]}])]
        want = "edits[0].neurons[0]: index 64 out of range"
    elif case == "unknown_site":
        argv = ["run", "-m", m, "--prompt", "x", "--edits", edits_file(
            tmp_path, [{"op": "prune", "site": "blocks.7.mlp.hook_post", "neurons": [1]}])]
        want = "edits[0].site: unknown site 'blocks.7.mlp.hook_post' (this model has 2 layers)"
    elif case == "pickle":
        d = tmp_path / "pickled"
        d.mkdir()
        (d / "config.json").write_text((tiny_dirs["gpt2"] / "config.json").read_text())
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
        argv = ["info", "-m", d]
        want = "--allow-pickle"
    elif case == "no_prompt":
        argv = ["run", "-m", m]
        want = "no prompt"
    elif case == "bad_prompts_file":
        f = tmp_path / "p.jsonl"
        f.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
        argv = ["run", "-m", m, "--prompts", f]
        want = "p.jsonl:2"
    else:
        argv = ["run", "-m", m, "--prompt", "x", "--edits", tmp_path / "missing.json"]
        want = "not found"
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and want in lines[0], err
    assert "Traceback" not in err


def test_debug_before_or_after_the_command_raises(capsys, tmp_path):
    """--debug lets the error through (the traceback) wherever it stands; without it, one line."""
    from neurolens.errors import LoadError
    missing = str(tmp_path / "nothing")
    code, out, err = run(capsys, "info", "-m", missing)
    assert code == 2 and err.count("\n") == 1 and "model folder not found" in err
    for argv in (["--debug", "info", "-m", missing], ["info", "-m", missing, "--debug"]):
        with pytest.raises(LoadError, match="model folder not found"):
            main(argv)


def test_corrupt_weights_clear_error(capsys, tiny_dirs, tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    for f in tiny_dirs["gpt2"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "model.safetensors").write_bytes(b"garbage" * 10)
    code, _, err = run(capsys, "info", "-m", d)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "could not load" in err


def test_allow_pickle_loads_bin(capsys, tmp_path):
    import tiny
    model = tiny.build("gpt2")
    d = tmp_path / "bin"
    model.save_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")  # a legacy pickle checkpoint
    tiny.tokenizer().save_pretrained(d)
    assert (d / "pytorch_model.bin").exists() and not list(d.glob("*.safetensors"))
    code, _, err = run(capsys, "info", "-m", d)
    assert code == 2 and "--allow-pickle" in err
    code, out, err = run(capsys, "info", "-m", d, "--allow-pickle", "--json")
    assert code == 0, err
    assert json.loads(out)["model_type"] == "gpt2"


def test_python_m_entry_point_and_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "neurolens", "info", "-m", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"neurolens: error: model folder not found: {tmp_path / 'none'}"


def test_every_command_has_its_help(capsys):
    """One module per command (neurolens.cli.commands): each adds its sub-parser."""
    from neurolens.cli.parser import COMMANDS
    names = ["info", "capture", "run", "compare", "export", "reproduce", "fit", "bench", "gui",
             "eval", "attribute", "index"]
    assert len(COMMANDS) == len(names)
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(n in out for n in names)
    for n in names:
        code, out, _ = run(capsys, n, "--help")
        assert code == 0 and out.startswith(f"usage: neurolens {n}"), n


def test_gui_process_settings_keep_a_user_value(monkeypatch):
    """`neurolens gui` makes OpenMP threads wait passively (GUI stalls on few cores), unless the
    user chose a policy."""
    from neurolens.gui.process import configure
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    configure()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_fit_writes_edits_the_other_commands_take(capsys, tiny_dirs, tmp_path):
    """`neurolens fit` for each LM method writes a neurolens.edits/1 file; `run --edits` takes it
    and a key-space gate abstains on its forget prompts."""
    m = tiny_dirs["llama"]
    forget = tmp_path / "forget.txt"
    forget.write_text("\n".join(f"Compute: {a}+{a}=" for a in range(10, 30)) + "\n")
    keep = tmp_path / "keep.jsonl"
    keep.write_text("".join(json.dumps({"prompt": f"Story: Mia has a {c} kite."}) + "\n"
                            for c in ("red", "blue", "green", "gold", "pink", "gray")))
    cases = {"neuron-adjust": ["--forget", forget, "--retain", keep, "--p", "0.05"],
             "key-space": ["--forget", forget, "--keep", keep, "--layer", "auto", "--alpha",
                           "1.5"],
             "neurostrike": ["--harmful", forget, "--benign", keep],
             "topk": ["--keep-fraction", "0.1"]}
    ops = {"neuron-adjust": "adjust", "key-space": "gate", "neurostrike": "prune",
           "topk": "topk"}
    for method, extra in cases.items():
        out_file = tmp_path / f"{method}.json"
        code, out, err = run(capsys, "fit", method, "-m", m, "--out", out_file, "--json", *extra)
        assert code == 0, err
        d = json.loads(out)
        spec = json.loads(out_file.read_text())
        assert spec["format"] == "neurolens.edits/1" and d["n_ops"] == len(spec["edits"])
        assert {e["op"] for e in spec["edits"]} <= {ops[method]}
        if method == "neuron-adjust":
            assert d["report"]["n_selected"] == round(0.05 * 2 * 64)
        if method == "key-space":
            table = d["report"]["layer_choice"]
            best = max(table, key=lambda r: (r["margin"], r["layer"]))
            assert d["report"]["site"] == f"blocks.{best['layer']}.mlp.hook_post"
            code, out, err = run(capsys, "run", "-m", m, "--edits", out_file, "--prompt",
                                 "Compute: 11+11=", "--json", "--max-new-tokens", "3")
            assert code == 0, err
            assert json.loads(out)["output"] == " I can't help with that."
    code, out, err = run(capsys, "fit", "key-space", "-m", m, "--out", tmp_path / "x.json")
    assert code == 2 and err.count("\n") == 1 and "--forget" in err
    code, out, err = run(capsys, "fit", "neuron-adjust", "-m", m, "--out", tmp_path / "x.json",
                         "--forget", forget, "--retain", keep, "--p", "3")
    assert code == 2 and "between 0 and 1" in err


def test_prompt_files_carry_answers_and_the_methods_probe_them(capsys, tiny_dirs, tmp_path,
                                                                   monkeypatch):
    """JSONL rows keep their answers; `fit neuron-adjust` probes prompt + answer unless
    --prompts-only, and says which in its report."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Compute: 1+2=", "answer": "3"}) + "\n\n"
                    + json.dumps({"prompt": "Story: a kite.", "answer": None}) + "\n")
    assert read_prompt_rows(rows) == [("Compute: 1+2=", "3"), ("Story: a kite.", None)]
    assert read_prompts(rows) == ["Compute: 1+2=", "Story: a kite."]
    assert read_prompts(rows, with_answers=True) == ["Compute: 1+2=3", "Story: a kite."]
    lines = tmp_path / "lines.txt"
    lines.write_text("one\\ntwo\nthree\n")
    assert read_prompt_rows(lines) == [("one\ntwo", None), ("three", None)]
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps({"prompt": f"Compute: {a}+{a}=", "answer": str(2 * a)})
                              + "\n" for a in range(10, 30)))
    m = tiny_dirs["llama"]
    reports = {}
    for extra in ([], ["--prompts-only"]):
        code, out, err = run(capsys, "fit", "neuron-adjust", "-m", m, "--out",
                             tmp_path / "na.json", "--forget", forget, "--retain", lines,
                             "--json", *extra)
        assert code == 0, err
        reports[bool(extra)] = json.loads(out)["report"]
    assert reports[False]["texts"].startswith("prompt + answer")
    assert reports[True]["texts"] == "prompts"
    # the answers' tokens change the forget statistics, so the ranking changes
    assert reports[False]["top"] != reports[True]["top"]
    # NeuroStrike: the benign files (several) with their answers, the harmful requests alone
    from neurolens.methods import neurostrike
    seen, real_fit = [], neurostrike.fit
    monkeypatch.setattr(neurostrike, "fit",
                        lambda lm, h, b, **kw: seen.append((h, b)) or real_fit(lm, h, b, **kw))
    for extra in ([], ["--prompts-only"]):
        code, out, err = run(capsys, "fit", "neurostrike", "-m", m, "--out", tmp_path / "ns.json",
                             "--harmful", lines, "--benign", forget, rows, "--json", *extra)
        assert code == 0, err
        rep = json.loads(out)["report"]
        assert rep["n_harmful"] == 2 and rep["n_benign"] == 22
        assert rep["texts"] == {"harmful": "prompts",
                                "benign": "prompts" if extra else
                                "prompt + answer where a JSONL row has one"}
    # a repeated flag adds its files; the harmful file among the benign ones is refused
    code, out, err = run(capsys, "fit", "neurostrike", "-m", m, "--out", tmp_path / "ns.json",
                         "--harmful", lines, "--benign", forget, "--benign", rows, "--json")
    assert code == 0, err
    assert json.loads(out)["report"]["n_benign"] == 22 and seen[-1][1] == seen[0][1]
    code, out, err = run(capsys, "fit", "neurostrike", "-m", m, "--out", tmp_path / "ns.json",
                         "--harmful", lines, "--benign", forget, lines)
    assert code == 2 and "among the --benign files" in err and err.count("\n") == 1
    assert seen[0][0] == seen[1][0] == ["one\ntwo", "three"]
    assert seen[0][1][0] == "Compute: 10+10=20" and seen[0][1][-2:] == ["Compute: 1+2=3",
                                                                        "Story: a kite."]
    assert seen[1][1][0] == "Compute: 10+10=" and seen[1][1][-2] == "Compute: 1+2="


def test_reproduce_reads_the_experiment_registry(capsys, tiny_dirs):
    """A registered protocol is offered by ``reproduce`` and run on the model it needs; keys
    starting with ``_`` (arrays for the image grid) never reach the JSON; a model of the
    wrong family is refused with one line and exit 2."""
    from neurolens.evals import experiments
    seen = []

    def toy_run(model, *, limit=None, log=print, prompts_dir=None):
        seen.append((model.kind, model.n_layers, limit))
        return {"layers": model.n_layers, "_images": [1, 2]}
    experiments.register(experiments.Experiment("toy-protocol", "lm", toy_run,
                                                lambda r: f"toy table {r['layers']}"))
    try:
        code, out, err = run(capsys, "reproduce", "toy-protocol", "-m", tiny_dirs["llama"],
                             "--limit", "3", "--json")
        assert code == 0, err
        want = AutoConfig.from_pretrained(tiny_dirs["llama"]).num_hidden_layers
        assert json.loads(out) == {"layers": want}
        assert seen == [("lm", want, 3)]
        code, out, _ = run(capsys, "reproduce", "toy-protocol", "-m", tiny_dirs["llama"])
        assert out.strip() == f"toy table {want}"
        code, _, err = run(capsys, "reproduce", "memorization", "-m", tiny_dirs["llama"])
        assert code == 2 and "needs a diffusion pipeline" in err and len(err.splitlines()) == 1
    finally:
        experiments._REGISTRY.pop("toy-protocol", None)
