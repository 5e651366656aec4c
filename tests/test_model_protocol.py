"""One contract for every model family: the protocol, the events, the cancel error, the edits'
checks and the export, the same for a language model and a diffusion pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.engine.events import Cancelled, Finished, Progress, Started
from neurolens.engine.hooks import CancelToken
from neurolens.engine.model import Model
from neurolens.errors import Cancelled as CancelledError
from neurolens.errors import InputError


@pytest.fixture(scope="module")
def dm(tiny_pipeline_dir):
    return nl.load(tiny_pipeline_dir)


def test_both_families_implement_the_protocol(llama, dm):
    for m, kind in ((llama, "lm"), (dm, "diffusion")):
        assert isinstance(m, Model) and m.kind == kind
        sites = m.sites()
        assert sites and all(isinstance(w, int) and w > 0 for w in sites.values())
        assert m.resolve_sites(next(iter(sites))) == [next(iter(sites))]
        assert len(m.fingerprint) == 16


def test_runs_start_report_progress_and_finish_the_same_way(llama, dm):
    lm_events = list(llama.generate_events(["a", "b"]))
    dm_events = list(dm.denoise_events(["a digit 1"], steps=3))
    for evs, total, unit in ((lm_events, 2, "prompts"), (dm_events, 3, "steps")):
        assert isinstance(evs[0], Started) and (evs[0].total, evs[0].unit) == (total, unit)
        prog = [e for e in evs if isinstance(e, Progress)]
        assert prog and prog[-1].done == total and all(e.total == total for e in prog)
        assert isinstance(evs[-1], Finished)
    assert len(lm_events[-1].result) == 2
    assert lm_events[-1].result[0].prompt == "a"
    assert dm_events[-1].result.images.shape == (1, 16, 16, 1)


def test_cancel_raises_the_same_error_in_both_families(llama, dm):
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(CancelledError):
        llama.generate(["a"], cancel=tok)
    with pytest.raises(CancelledError):
        llama.capture(["a"], "blocks.0.mlp.hook_post", cancel=tok)
    evs = list(dm.denoise_events(["a digit 1"], steps=3, cancel=tok))
    assert isinstance(evs[-1], Cancelled) and evs[-1].at == 0
    from neurolens.engine.events import drain
    with pytest.raises(CancelledError, match="at step 0"):
        drain(dm.denoise_events(["a digit 1"], steps=3, cancel=tok))


def test_an_op_of_another_family_is_refused_only_when_enabled(llama, dm):
    lm_site = "blocks.0.mlp.hook_post"
    dm_site = next(iter(dm.sites()))
    topk = nl.TopK(dm_site, 0.1)
    with pytest.raises(InputError, match="'topk' is for language models; a diffusion pipeline"):
        dm.check_edits(nl.EditSet([topk]))
    wm = nl.MaskWeights(lm_site, np.zeros((32, 64), np.uint8))
    with pytest.raises(InputError, match="'wmask' is for diffusion pipelines; a language model"):
        llama.check_edits(nl.EditSet([wm]))
    # kept but disabled: the file still opens and runs (an edit file may serve two models)
    wm.enabled = False
    topk.enabled = False
    assert llama.check_edits(nl.EditSet([wm])) == []
    assert isinstance(llama.generate("a", edits=nl.EditSet([wm]), max_new_tokens=2).text, str)
    assert [w_ for w_ in dm.check_edits(nl.EditSet([topk]))
            if "fingerprint" not in w_] == []


def test_export_writes_one_readme_naming_what_is_baked(llama, dm, tmp_path):
    lm_edits = nl.EditSet([nl.Prune("blocks.0.mlp.hook_post", [1, 2]),
                           nl.Scale("blocks.1.mlp.hook_post", [3], 0.5, positions="last")])
    r = llama.export(lm_edits, tmp_path / "lm")
    assert len(r.baked) == 1 and len(r.sidecar) == 1
    text = (tmp_path / "lm" / "NEUROLENS.md").read_text()
    assert "## Baked into the weights" in text and "prune 2 neurons" in text
    assert "## Not baked: needs neurolens" in text and "scale 1 neuron" in text
    site = next(iter(dm.sites()))
    dm_edits = nl.EditSet([nl.Prune(site, [0]), nl.Prune(site, [1], steps=(0, 2))])
    r = dm.export(dm_edits, tmp_path / "dm")
    assert len(r.baked) == 1 and r.sidecar == [f"prune 1 neuron at {site} (steps 0-2)"]
    text = (tmp_path / "dm" / "NEUROLENS.md").read_text()
    assert "## Baked into the UNet weights" in text and "`diffusers`" in text
    # the baked prune is in the saved UNet: the column that reads neuron 0 is zero
    from safetensors.torch import load_file
    path = dm._sites[site][0] + ".weight"
    w = load_file(str(tmp_path / "dm" / "unet" / "diffusion_pytorch_model.safetensors"))[path]
    assert torch.count_nonzero(w[:, 0]) == 0 and torch.count_nonzero(w[:, 1]) > 0


def test_diffusion_fingerprint_does_not_depend_on_the_folder(dm, tmp_path):
    dm.export(None, tmp_path / "copy")
    again = nl.load(tmp_path / "copy")
    assert again.fingerprint == dm.fingerprint
