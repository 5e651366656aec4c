"""A new method and a new op need no change outside their own module.

This module is that module: it defines a toy op (``clamp``: hold some neurons within +-limit; its
data class, its engine hook) and a toy method (``clamp-top``: clamp the neurons that fire most on
a probe set) and registers both. The CLI then offers the method (``fit --help``) and fits it,
and the edits it writes run through ``generate``, checked against plain transformers with a
hand-written hook on the hard-coded module of the tiny Llama.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.cli import main
from neurolens.engine import ops as engine_ops
from neurolens.errors import SpecError
from neurolens.methods import registry
from neurolens.methods.common import probe_stats
from neurolens.spec import edits as spec_edits
from native_sites import plain_greedy


# -- the toy op: data (spec) and engine (hook) -----------------------------------------------------
@dataclass
class Clamp(spec_edits.EditOp):
    """Hold the neurons' values within [-limit, limit]."""

    op: ClassVar[str] = "clamp"
    required: ClassVar[tuple[str, ...]] = ("site", "neurons", "limit")
    neurons: list[int] = field(default_factory=list)
    limit: float = 0.0

    def __init__(self, site, neurons, limit=0.0, positions="all", enabled=True, note="",
                 steps=None):
        self.site, self.neurons, self.limit, self.positions = site, neurons, limit, positions
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where):
        super().check(where)
        self.neurons = [int(n) for n in self.neurons]
        if not self.limit >= 0:
            raise SpecError(f"{where}.limit: must be >= 0")


class ClampHandler:
    def __init__(self, op, ref, ctx):
        self.op = op

    def __call__(self, x, state):
        idx = torch.tensor(self.op.neurons, device=x.device)
        x[..., idx] = x[..., idx].clamp(-self.op.limit, self.op.limit)
        return x


# -- the toy method --------------------------------------------------------------------------------
@dataclass
class ClampReport:
    site: str
    neurons: list[int]

    def summary(self) -> str:
        return f"clamp-top: {len(self.neurons)} neurons at {self.site}"

    def to_json(self) -> dict:
        return {"site": self.site, "neurons": self.neurons}


@dataclass
class ClampParams:
    k: int = registry.param(2, "how many neurons to clamp")
    limit: float = registry.param(0.0, "the bound (0: silence them)")
    layer: int = registry.param(0, "the layer")


def fit_clamp(model, sets, params: ClampParams, **_) -> registry.MethodResult:
    site = f"blocks.{params.layer}.mlp.hook_post"
    stats = probe_stats(model, sets["probe"], [site])[site]
    top = sorted(np.argsort(-np.abs(stats.mean))[:params.k].tolist())
    es = nl.EditSet([Clamp(site, top, params.limit)])
    return registry.MethodResult(es, ClampReport(site, top), [(site, j) for j in top])


@pytest.fixture
def toy():
    spec_edits.register_op(Clamp)
    engine_ops.register("clamp", kinds=("lm",))(ClampHandler)
    spec = registry.register(registry.MethodSpec(
        "clamp-top", "Clamp the top neurons", ("lm",),
        (registry.Role("probe", "prompts whose most active neurons get clamped"),),
        ClampParams, fit_clamp, "a toy method of the registry test"))
    yield spec
    registry.unregister("clamp-top")
    engine_ops.unregister("clamp")
    spec_edits.OPS.pop("clamp", None)


def test_a_registered_method_and_op_fit_and_run_with_no_other_change(toy, tiny_dirs, tmp_path,
                                                                     capsys):
    assert main(["fit", "--help"]) == 0       # in process: the parser reads the registry
    help_text = capsys.readouterr().out
    assert "clamp-top" in help_text and "Clamp the top neurons" in help_text
    assert "--probe FILE" in help_text and "--limit" in help_text and "--k K" in help_text

    probe = tmp_path / "probe.txt"
    probe.write_text("the cat sat\nhello world\nab ab ab\n")
    out = tmp_path / "clamp.json"
    code = main(["fit", "clamp-top", "-m", str(tiny_dirs["llama"]), "--probe", str(probe),
                 "--k", "3", "--layer", "1", "--out", str(out), "--json"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    payload = json.loads(printed.out)
    assert payload["method"] == "clamp-top" and payload["n_ops"] == 1
    neurons = payload["report"]["neurons"]
    assert len(neurons) == 3 and payload["report"]["site"] == "blocks.1.mlp.hook_post"
    # a method without the set it needs is refused before the model loads
    assert main(["fit", "clamp-top", "--out", str(out)]) == 2
    assert "clamp-top needs --probe FILE" in capsys.readouterr().err

    # the file holds the toy op; it loads and runs through generate
    edits = nl.EditSet.load(out)
    assert [op.op for op in edits] == ["clamp"] and edits[0].neurons == neurons
    lm = nl.load(tiny_dirs["llama"])
    ids = lm.tokenizer("the cat sat")["input_ids"]
    got = lm.generate("the cat sat", edits=edits, max_new_tokens=6, ignore_eos=True)

    # reference: plain transformers with a hand-written hook on the hard-coded module whose
    # input is blocks.1.mlp.hook_post (the tiny Llama's down projection of layer 1)
    hf = lm.hf
    idx = torch.tensor(neurons)

    def clamp_input(module, args):
        x = args[0].clone()
        x[..., idx] = 0.0
        return (x,)
    handle = hf.model.layers[1].mlp.down_proj.register_forward_pre_hook(clamp_input)
    try:
        want = plain_greedy(hf, ids, 6)
    finally:
        handle.remove()
    assert got.token_ids == want
    # the edit does something: the logits move where the neurons were silenced
    base, edited = lm.logits(["the cat sat"]), lm.logits(["the cat sat"], edits=edits)
    assert np.abs(base[0] - edited[0]).max() > 1e-4

    # the Python API gives the same fit, unpacking as (edits, report)
    es, rep = toy.run(lm, {"probe": probe.read_text().splitlines()},
                      {"k": 3, "layer": 1})
    assert rep.neurons == neurons and es[0].op == "clamp"
