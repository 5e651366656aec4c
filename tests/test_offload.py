"""``device="auto"``: a model placed by accelerate with some layers offloaded to disk gives what
the plainly loaded model gives (logits, generation, captures, edits, compare, export).

References: plain ``transformers`` (its forward, its greedy ``generate``, torch hooks on the
hard-coded module path of the FFN's down projection, hand-zeroed weights) and the export of the
plainly loaded model, tensor by tensor.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import neurolens as nl
import tiny
from neurolens.engine import memory
from neurolens.engine.export import export
from neurolens.errors import LoadError
from test_export_stream import assert_same_export

PROMPTS = ["Compute: 47+38=", "Story: Tom has a red ball and"]
#: on the tiny llama (143 kB): the embedding and layer 0 on the CPU, layer 1 and the head on disk
MAX_MEMORY = {"cpu": 120_000}
EDITS = nl.EditSet([nl.Prune("blocks.1.mlp.hook_post", [0, 5, 9]),
                    nl.Prune("blocks.0.mlp.hook_post", [3])])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    src = tiny.save("llama", tmp_path_factory.mktemp("offload") / "src")
    off = nl.load(src, device="auto", max_memory=MAX_MEMORY)
    ref = AutoModelForCausalLM.from_pretrained(src).eval()
    return src, off, ref


def _ref_logits(hf, lm):
    with torch.no_grad():
        return [hf(**lm.encode([p])).logits[0].float().numpy() for p in PROMPTS]


def test_layers_are_on_cpu_and_disk(models):
    _, off, _ = models
    placed = off.hf.hf_device_map
    assert placed["model.layers.0"] == "cpu" and placed["model.layers.1"] == "disk", placed
    w = off.hf.get_submodule("model.layers.1.mlp.down_proj").weight
    assert w.device.type == "meta"             # really offloaded: a placeholder between forwards
    assert str(off.device) == "cpu"


def test_logits_and_generation_equal_plain_transformers(models):
    _, off, ref = models
    for got, want in zip(off.logits(PROMPTS), _ref_logits(ref, off)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    out = off.generate(PROMPTS[0], max_new_tokens=6, ignore_eos=True)
    enc = off.encode([PROMPTS[0]])
    with torch.no_grad():
        ids = ref.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.token_ids == ids[0, enc["input_ids"].shape[1]:].tolist()


def test_captures_equal_hooks_on_the_plain_model(models):
    _, off, ref = models
    cap = off.capture(PROMPTS, ["blocks.*.mlp.hook_post"])
    for layer in range(2):
        rows = []
        h = ref.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
            lambda m, a, rows=rows: rows.append(a[0][0].detach().numpy()))
        for p in PROMPTS:
            with torch.no_grad():
                ref(**off.encode([p]))
        h.remove()
        for got, want in zip(cap[f"blocks.{layer}.mlp.hook_post"], rows):
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    last = off.capture(PROMPTS, ["blocks.1.mlp.hook_post"], reduce="max")
    for got, want in zip(last["blocks.1.mlp.hook_post"], rows):
        np.testing.assert_allclose(got[0], want.max(0), atol=1e-5, rtol=0)


def test_edits_equal_hand_zeroed_weights(models):
    src, off, _ = models
    edited = AutoModelForCausalLM.from_pretrained(src).eval()
    with torch.no_grad():
        edited.model.layers[1].mlp.down_proj.weight[:, [0, 5, 9]] = 0
        edited.model.layers[0].mlp.down_proj.weight[:, [3]] = 0
    for got, want in zip(off.logits(PROMPTS, edits=EDITS), _ref_logits(edited, off)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the offloaded weights are untouched by the edit hooks
    assert off.hf.get_submodule("model.layers.1.mlp.down_proj").weight.device.type == "meta"
    for got, want in zip(off.logits(PROMPTS), _ref_logits(edited.__class__.from_pretrained(src),
                                                         off)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_compare_equals_the_plain_loaded_model(models):
    src, off, _ = models
    plain = nl.load(src)
    a = off.compare(PROMPTS, EDITS, max_new_tokens=5)
    b = plain.compare(PROMPTS, EDITS, max_new_tokens=5)
    assert [r.baseline.token_ids for r in a.items] == [r.baseline.token_ids for r in b.items]
    assert [r.edited.token_ids for r in a.items] == [r.edited.token_ids for r in b.items]
    np.testing.assert_allclose([r.mean_kl for r in a.items], [r.mean_kl for r in b.items],
                               atol=1e-6)
    assert off.fingerprint == plain.fingerprint


def test_export_equals_the_plain_export(models, tmp_path):
    src, off, _ = models
    plain = nl.load(src)
    plain.encode(PROMPTS)   # a tokenizer saves its last padding: use both the same way
    want = export(plain, EDITS, tmp_path / "plain", stream=False)
    streamed = export(off, EDITS, tmp_path / "off-stream")
    assert streamed.streamed and len(streamed.baked) == 2 and not streamed.sidecar
    gathered = export(off, EDITS, tmp_path / "off-memory", stream=False)   # the fallback
    assert not gathered.streamed
    assert_same_export(streamed.path, want.path)
    assert_same_export(gathered.path, want.path)


def test_preflight_auto_counts_cpu_and_disk(models, monkeypatch):
    src, _, _ = models

    class Usage:
        free = 1000
    monkeypatch.setattr(memory.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(LoadError, match="disk"):
        nl.load(src, device="auto", max_memory={"cpu": 10_000})
    Usage.free = 10**9
    assert memory.preflight(src, device="auto", max_memory={"cpu": 10_000}) is not None
    with pytest.raises(LoadError, match="max_memory"):
        nl.load(src, max_memory={"cpu": 10_000})


def test_whole_model_on_disk(models):
    src, _, ref = models
    off = nl.load(src, device="auto", max_memory={"cpu": 1_000})
    assert off.hf.hf_device_map == {"": "disk"}
    assert off.fingerprint == nl.load(src).fingerprint      # read from the offload
    for got, want in zip(off.logits(PROMPTS), _ref_logits(ref, off)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_logit_lens_reads_offloaded_weights(models):
    """Layer 1's down projection and the head sit on disk: the lens reads them from there and
    equals the plain model's (down-projection column through the RMSNorm weight and the head,
    by hand)."""
    src, off, ref = models
    lens = off.logit_lens(1, 5, k=5)
    col = ref.model.layers[1].mlp.down_proj.weight[:, 5].double()
    scores = ref.lm_head.weight.double() @ (col * ref.model.norm.weight.double())
    top = torch.topk(scores, 5).values.tolist()
    assert [v for _, v in lens["promote"]] == pytest.approx(top, rel=1e-5)
    assert lens == nl.load(src).logit_lens(1, 5, k=5)


def test_cli_max_memory_places_like_the_api_and_rejects_bad_values(models, capsys):
    """``--max-memory`` reaches accelerate: the same placement as MAX_MEMORY (hard-coded module
    names, as above); a malformed value is one line and exit 2, before any loading."""
    from neurolens.cli import main
    from neurolens.cli.common import load_model
    from neurolens.cli.parser import build_parser
    src = str(models[0])
    args = build_parser().parse_args(["info", "-m", src, "--device", "auto",
                                      "--max-memory", "cpu=120000"])
    placed = load_model(args).hf.hf_device_map
    assert placed["model.layers.0"] == "cpu" and placed["model.layers.1"] == "disk", placed
    args = build_parser().parse_args(["info", "-m", src, "--device", "auto",
                                      "--max-memory", "cpu=1kb"])
    assert load_model(args).hf.hf_device_map == {"": "disk"}       # 1,000 bytes, as the API's
    for bad, says in (("cpu=lots", "'lots' for cpu is not a size"),
                      ("gpu0=1GB", "unknown device 'gpu0'"), ("cpu", "is not DEVICE=SIZE"),
                      ("cpu=8GiB,", None), ("0=-1GB", "not a size")):
        code = main(["info", "-m", src, "--device", "auto", "--max-memory", bad])
        err = capsys.readouterr().err
        if says is None:         # a trailing comma is fine
            assert code == 0, err
            continue
        assert code == 2 and err.count("\n") == 1 and says in err, (bad, err)
    assert main(["info", "-m", src, "--max-memory", "cpu=8GiB"]) == 2
    assert "--max-memory is for --device auto" in capsys.readouterr().err
