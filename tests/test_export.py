"""Export: baked edits reproduce the edited model in plain transformers; the rest is a sidecar."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import neurolens as nl
import tiny

PROMPTS = ["Compute: 47+38=", "Story: Tom has a red ball."]


def plain_logits(folder, lm, prompts):
    m = AutoModelForCausalLM.from_pretrained(folder).eval()
    out = []
    for p in prompts:
        ids = lm.encode([p])
        with torch.no_grad():
            out.append(m(**ids).logits[0].numpy())
    return out


BAKEABLE = {
    "gpt2": [nl.Prune("blocks.0.mlp.hook_post", [1, 2, 3]),
             nl.Scale("blocks.1.mlp.hook_post", [4, 9], factor=2.5),
             nl.Prune("blocks.1.mlp.hook_pre", [10, 11]),
             nl.Set("blocks.0.mlp.hook_post", [20], value=0.7),
             nl.Scale("blocks.0.hook_mlp_out", [3], factor=-1.0)],
    "llama": [nl.Prune("blocks.0.mlp.hook_post", [1, 2, 3]),
              nl.Scale("blocks.1.mlp.hook_post", [4, 9], factor=2.5),
              nl.Prune("blocks.1.mlp.hook_pre", [10, 11]),
              nl.Scale("blocks.0.mlp.hook_pre_linear", [12], factor=0.3),
              nl.Prune("blocks.*.mlp.hook_pre_linear", [30]),
              nl.Scale("blocks.1.hook_mlp_out", [5], factor=0.0)],
    "phi3": [nl.Prune("blocks.0.mlp.hook_pre", [2]),
             nl.Scale("blocks.1.mlp.hook_pre_linear", [7], factor=3.0),
             nl.Prune("blocks.1.mlp.hook_post", [8])],
}


@pytest.mark.parametrize("arch", list(BAKEABLE))
def test_baked_export_matches_edited_model(arch, tmp_path):
    lm = tiny.lm(arch)
    edits = nl.EditSet(BAKEABLE[arch])
    report = lm.export(edits, tmp_path / "out")
    assert report.sidecar == [] and len(report.baked) >= len(edits)
    assert not (tmp_path / "out" / "neurolens_edits.json").exists()
    ours = lm.logits(PROMPTS, edits=edits)
    base = lm.logits(PROMPTS)
    theirs = plain_logits(tmp_path / "out", lm, PROMPTS)
    for a, b, c in zip(ours, theirs, base):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert np.abs(a - c).max() > 1e-4  # the edits do something
    assert "Baked into the weights" in (tmp_path / "out" / "NEUROLENS.md").read_text()
    # the loaded model is untouched
    np.testing.assert_array_equal(lm.logits(PROMPTS)[0], base[0])


def test_unbakeable_edits_go_to_sidecar_and_reload(tmp_path):
    lm = tiny.lm("llama")
    edits = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [1]),
                        nl.Scale("blocks.1.mlp.hook_pre", [3], factor=4.0),
                        nl.Prune("blocks.1.mlp.hook_post", [5], positions="last")])
    lm.hf.save_pretrained(tmp_path / "src")
    lm.tokenizer.save_pretrained(tmp_path / "src")
    src = nl.load(tmp_path / "src")
    report = src.export(edits, tmp_path / "out")
    assert len(report.baked) == 1 and len(report.sidecar) == 2
    assert "NOT baked" in report.summary()
    md = (tmp_path / "out" / "NEUROLENS.md").read_text()
    assert "needs neurolens" in md and "scale 1 neuron at blocks.1.mlp.hook_pre" in md
    again = nl.load(tmp_path / "out")
    assert len(again.base_edits) == 2 and any("re-applying" in n for n in again.notes)
    want = src.generate(PROMPTS, edits=edits, max_new_tokens=6)
    got = again.generate(PROMPTS, max_new_tokens=6)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    np.testing.assert_allclose(again.logits(PROMPTS)[0], src.logits(PROMPTS, edits=edits)[0],
                               atol=1e-5)


def test_export_refuses_non_empty_target(tmp_path, gpt2):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    edits = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [1])])
    with pytest.raises(nl.InputError, match="not empty.*--force"):
        gpt2.export(edits, out)
    assert (out / "precious.txt").read_text() == "keep me"
    gpt2.export(edits, out, force=True)
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
