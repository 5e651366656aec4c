"""Edit specs: round trip, sidecar arrays, validation that names the bad field."""

import json
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest

import neurolens as nl
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, EditSet, ModelRef, OPS, register_op
from neurolens.spec.sites import (match_sites, neuron_label, parse_neuron_label, parse_site,
                                   site_name)

WIDTHS = {f"blocks.{l}.mlp.hook_post": 16 for l in range(3)}
WIDTHS.update({f"blocks.{l}.mlp.hook_pre": 16 for l in range(3)})


def write(tmp_path, d):
    p = tmp_path / "e.json"
    p.write_text(json.dumps(d))
    return p


def test_round_trip(tmp_path):
    es = EditSet([nl.Prune("blocks.1.mlp.hook_post", [3, 7], note="why"),
                  nl.Scale("blocks.2.mlp.hook_post", [5], factor=0.5, positions="last"),
                  nl.Set("blocks.2.mlp.hook_pre", [5], value=-2.0, positions=[0, -1],
                         enabled=False)],
                 ModelRef("demo", "abc"))
    es.save(tmp_path / "e.json")
    back = EditSet.load(tmp_path / "e.json")
    assert [type(e) for e in back] == [nl.Prune, nl.Scale, nl.Set]
    assert back[0].neurons == [3, 7] and back[0].note == "why"
    assert back[1].factor == 0.5 and back[1].positions == "last"
    assert back[2].value == -2.0 and back[2].positions == [0, -1] and back[2].enabled is False
    assert back.model.fingerprint == "abc"
    assert not (tmp_path / "e.safetensors").exists()  # no arrays, no sidecar
    assert len(back.enabled()) == 2


def test_sidecar_arrays_round_trip(tmp_path):
    @register_op
    @dataclass
    class Shift(EditOp):
        op: ClassVar[str] = "test_shift"
        required: ClassVar[tuple] = ("site", "neurons", "offsets")
        neurons: list = field(default_factory=list)
        offsets: np.ndarray = None

        def check(self, where):
            super().check(where)

    try:
        off = np.arange(3, dtype=np.float32) * 0.25
        op = Shift.__new__(Shift)
        op.site, op.neurons, op.offsets = "blocks.0.mlp.hook_post", [1, 2, 3], off
        op.positions, op.enabled, op.note, op.steps = "all", True, "", None
        EditSet([op]).save(tmp_path / "s.json")
        d = json.loads((tmp_path / "s.json").read_text())
        assert d["sidecar"] == "s.safetensors"
        assert d["edits"][0]["offsets"] == {"sidecar": "e0.offsets"}
        back = EditSet.load(tmp_path / "s.json")
        np.testing.assert_array_equal(back[0].offsets, off)
        (tmp_path / "s.safetensors").unlink()
        with pytest.raises(nl.SpecError, match="sidecar"):
            EditSet.load(tmp_path / "s.json")
    finally:
        OPS.pop("test_shift")


@pytest.mark.parametrize("edit,match", [
    ({"op": "explode", "site": "blocks.0.mlp.hook_post"}, r"edits\[0\]\.op: unknown op 'explode'"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post"}, r"edits\[0\]\.neurons: missing"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [1, "x"]},
     r"edits\[0\]\.neurons\[1\]"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [-1]}, r"neurons\[0\]: neg"),
    ({"op": "scale", "site": "blocks.0.mlp.hook_post", "neurons": [1]}, r"\.factor: missing"),
    ({"op": "scale", "site": "blocks.0.mlp.hook_post", "neurons": [1], "factor": "big"},
     r"\.factor: expected a finite number"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [1], "positions": "first"},
     r"\.positions"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [1], "colour": 3},
     r"unknown field"),
    ({"op": "prune", "site": "blocks.0.mlp.hook_post", "neurons": [1], "steps": [5, 2]},
     r"\.steps"),
])
def test_bad_fields_are_named(tmp_path, edit, match):
    p = write(tmp_path, {"format": "neurolens.edits/1", "edits": [edit]})
    with pytest.raises(nl.SpecError, match=match):
        EditSet.load(p)


def test_bad_files(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(nl.SpecError, match="malformed JSON"):
        EditSet.load(p)
    with pytest.raises(nl.SpecError, match="format"):
        EditSet.load(write(tmp_path, {"format": "other/2", "edits": []}))
    with pytest.raises(nl.SpecError, match="not found"):
        EditSet.load(tmp_path / "missing.json")


def test_validate_against_model():
    ok = EditSet([nl.Prune("blocks.1.mlp.hook_post", [15])])
    assert ok.validate(WIDTHS) == []
    with pytest.raises(nl.SpecError, match=r"edits\[0\]\.neurons\[1\]: index 16 out of range .*"
                                           r"width 16"):
        EditSet([nl.Prune("blocks.1.mlp.hook_post", [3, 16])]).validate(WIDTHS)
    with pytest.raises(nl.SpecError, match=r"edits\[0\]\.site: unknown site 'blocks\.9"):
        EditSet([nl.Prune("blocks.9.mlp.hook_post", [1])]).validate(WIDTHS)
    with pytest.raises(nl.SpecError, match="matches no site"):
        EditSet([nl.Prune("blocks.*.attn.hook_z", [1])]).validate(WIDTHS)
    # pattern: neuron range checked on every matched site
    EditSet([nl.Prune("blocks.*.mlp.hook_pre", [1])]).validate(WIDTHS)
    warn = EditSet([nl.Prune("blocks.1.mlp.hook_post", [1])], ModelRef("m", "aaa")).validate(
        WIDTHS, fingerprint="bbb")
    assert warn and "fingerprint mismatch" in warn[0]


def test_site_names_and_labels():
    assert str(parse_site("blocks.3.mlp.hook_pre_linear")) == "blocks.3.mlp.hook_pre_linear"
    assert parse_site("model.layers.3.mlp:output") is None
    assert neuron_label("blocks.3.mlp.hook_post", 17) == "L3.N17"
    assert neuron_label("blocks.3.mlp.hook_pre", 17, with_kind=True) == "L3.N17/pre"
    for text in ("L3.N17", "layer 3 neuron 17", "(3, 17)", "3:17", "L3/N17"):
        assert parse_neuron_label(text) == (3, 17), text
    assert parse_neuron_label("garbage") is None
    assert match_sites("blocks.*.mlp.hook_post", list(WIDTHS)) == [
        f"blocks.{l}.mlp.hook_post" for l in range(3)]


def test_site_names_are_built_in_one_place():
    assert site_name(3, "mlp.hook_post") == "blocks.3.mlp.hook_post"
    assert site_name(0, "hook_resid_post") == "blocks.0.hook_resid_post"
    s = parse_site(site_name(12, "mlp.hook_pre_linear"))
    assert (s.layer, s.kind) == (12, "mlp.hook_pre_linear")


# -- run settings as data -------------------------------------------------------------------------
def test_generation_params_round_trip_and_read_old_sessions():
    from neurolens.spec.run import DenoiseParams, GenerationParams
    p = GenerationParams(max_new_tokens=7, do_sample=True, temperature=0.5, seed=3,
                         stop=("\n",), ignore_eos=True)
    d = p.to_json()
    assert d["sample"] is True and "do_sample" not in d and d["stop"] == ["\n"]
    assert json.loads(json.dumps(d)) == d
    assert GenerationParams.from_json(d) == p
    # a session written before the settings were data: four keys and the GUI's own run_list
    old = {"max_new_tokens": 12, "sample": False, "temperature": 1.0, "seed": 5,
           "run_list": True}
    g = GenerationParams.from_json(old)
    assert (g.max_new_tokens, g.do_sample, g.seed, g.stop) == (12, False, 5, ())
    assert g.batch_size == GenerationParams().batch_size
    for bad in (dict(max_new_tokens=-1), dict(batch_size=0), dict(do_sample=True, temperature=0),
                dict(top_p=0.0)):
        with pytest.raises(InputError):
            GenerationParams(**bad).check()
    assert DenoiseParams(steps=4).check().to_json() == {"steps": 4, "guidance": 3.0, "seed": 0}
    with pytest.raises(InputError, match="steps"):
        DenoiseParams(steps=0).check()
