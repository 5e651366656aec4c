"""CLI family adapters: a model family the commands have never heard of plugs in by
registering an adapter for its ``kind`` (no command changes), and a kind with no adapter takes
the generic path (results that render themselves)."""

import json

import pytest

from neurolens.cli import families, main
from neurolens.engine import loading


class ToyModel:
    """A fourth family: "generation" reverses the prompt; a prune edit drops the characters at
    its neuron indices (of the reversed text)."""

    name_or_path = "toy-model"
    notes: list = []

    def __init__(self, kind="toy"):
        self.kind = kind

    def check_edits(self, edits):
        return []

    def generate(self, prompts, *, edits=None):
        drop = {n for op in (edits.enabled() if edits else []) for n in op.neurons}
        return ToyResult(["".join(c for i, c in enumerate(p[::-1]) if i not in drop)
                          for p in prompts])

    def compare(self, prompts, edits):
        return ToyComparison(self.generate(prompts), self.generate(prompts, edits=edits))


class ToyResult:
    def __init__(self, texts):
        self.texts = texts

    def to_json(self, per_sample=False):
        return {"texts": self.texts, "per_sample": per_sample}

    def summary(self):
        return f"toy outputs {self.texts}"


class ToyComparison:
    def __init__(self, before, after):
        self.before, self.after = before, after

    def to_json(self):
        return {"before": self.before.texts, "after": self.after.texts}

    def summary(self):
        return "; ".join(f"{b} -> {a}" for b, a in zip(self.before.texts, self.after.texts))


class ToyAdapter(families.FamilyAdapter):
    kind = "toy"

    def run(self, args, model, inputs, edits):
        for p, text in zip(inputs, model.generate(inputs, edits=edits).texts):
            print(f"[toy] {p} => {text}")
        return 0

    def compare(self, args, model, inputs, edits):
        cmp = model.compare(inputs, edits)
        changed = sum(b != a for b, a in zip(cmp.before.texts, cmp.after.texts))
        print(f"[toy] {changed}/{len(inputs)} changed")
        return 0


@pytest.fixture
def toy(monkeypatch):
    """``-m`` loads a ToyModel of the kind the test sets."""
    made = {"kind": "toy"}
    monkeypatch.setattr(loading, "load", lambda *a, **kw: ToyModel(made["kind"]))
    return made


@pytest.fixture
def toy_adapter():
    families.register(ToyAdapter)
    yield
    families.unregister("toy")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def edits_file(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"format": "neurolens.edits/1", "edits": [
        {"op": "prune", "site": "chars", "neurons": [0, 2]}]}))
    return p


def test_a_registered_fourth_family_runs_and_compares_through_its_adapter(
        capsys, tmp_path, toy, toy_adapter):
    code, out, err = run(capsys, "run", "-m", "x", "--prompt", "abcd")
    assert (code, out, err) == (0, "[toy] abcd => dcba\n", "")
    # the edit drops characters 0 and 2 of "dcba"
    code, out, _ = run(capsys, "run", "-m", "x", "--prompt", "abcd", "--edits",
                       edits_file(tmp_path))
    assert (code, out) == (0, "[toy] abcd => ca\n")
    prompts = tmp_path / "p.txt"
    prompts.write_text("abcd\nz\n")
    code, out, _ = run(capsys, "compare", "-m", "x", "--prompts", prompts, "--edits",
                       edits_file(tmp_path))
    assert (code, out) == (0, "[toy] 2/2 changed\n")   # "dcba" -> "ca", "z" -> ""


def test_a_kind_with_no_adapter_takes_the_generic_self_rendering_path(capsys, tmp_path, toy):
    toy["kind"] = "toy-unregistered"
    code, out, _ = run(capsys, "run", "-m", "x", "--prompt", "abc")
    assert (code, out) == (0, "toy outputs ['cba']\n")
    code, out, _ = run(capsys, "run", "-m", "x", "--prompt", "abc", "--json")
    assert code == 0 and json.loads(out) == {"texts": ["cba"], "per_sample": True}
    code, out, _ = run(capsys, "compare", "-m", "x", "--prompt", "abc", "--edits",
                       edits_file(tmp_path), "--json")
    assert code == 0 and json.loads(out) == {"before": ["cba"], "after": ["b"]}
    code, out, _ = run(capsys, "compare", "-m", "x", "--prompt", "abc", "--edits",
                       edits_file(tmp_path))
    assert (code, out) == (0, "cba -> b\n")



def test_eval_of_a_diffusion_pipeline_is_one_line_exit_2(capsys):
    """There is no skill eval for a pipeline: one line naming what to use instead (this was a
    TypeError traceback, exit 1)."""
    from neurolens.resources import DEMO_DIFFUSION, model_path
    assert main(["eval", "-m", str(model_path(DEMO_DIFFUSION))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neurolens compare" in err[0] and "Traceback" not in err[0]
