"""Export that streams from the source files writes exactly what the in-memory export writes.

Every tensor (name, dtype, value) of the streamed export is compared with ``torch.equal`` to the
in-memory export of the same model and edits (a deep copy baked and saved by ``save_pretrained``),
the config with the config, and plain ``transformers`` loading the streamed folder reproduces the
edited model's logits.
"""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import neurolens as nl
import tiny
from neurolens.engine.export import export
from neurolens.errors import InputError
from test_export import BAKEABLE

PROMPTS = ["Compute: 47+38=", "Story: Tom has a red ball."]

#: exact edits per architecture (gpt2: Conv1D layers with biases; llama/phi3: gated MLPs, phi3
#: fused gate_up; gemma, opt, gpt2: tied embeddings; gpt_neox: lm_head renamed on save)
EXACT = {
    **BAKEABLE,      # gpt2, llama, phi3: the in-memory export tests' edits
    "gemma": [nl.Prune("blocks.*.mlp.hook_post", [0, 5]),
              nl.Scale("blocks.1.mlp.hook_pre_linear", [3], factor=-2.0)],
    "opt": [nl.Prune("blocks.0.mlp.hook_post", [6]),
            nl.Set("blocks.1.mlp.hook_post", [2], value=-0.4),
            nl.Scale("blocks.1.hook_mlp_out", [1], factor=1.5)],
    "gpt_neox": [nl.Scale("blocks.0.mlp.hook_post", [2, 3], factor=0.5),
                 nl.Prune("blocks.1.mlp.hook_pre", [4])],
}


def tensors(folder) -> dict:
    """Every tensor of every safetensors file in ``folder``, as the safetensors library reads it."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                assert k not in out, f"{k} twice"
                out[k] = st.get_tensor(k)
    return out


def assert_same_export(streamed, in_memory):
    a, b = tensors(streamed), tensors(in_memory)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k
    for name in ("config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (streamed / name).is_file() == (in_memory / name).is_file(), name
        if (streamed / name).is_file():
            assert json.loads((streamed / name).read_text()) == \
                json.loads((in_memory / name).read_text()), name
    assert (streamed / "NEUROLENS.md").read_text() == (in_memory / "NEUROLENS.md").read_text()
    side_a, side_b = streamed / "neurolens_edits.json", in_memory / "neurolens_edits.json"
    assert side_a.is_file() == side_b.is_file()
    if side_a.is_file():
        assert json.loads(side_a.read_text())["edits"] == json.loads(side_b.read_text())["edits"]


def both(lm, edits, tmp_path, tag=""):
    s = export(lm, edits, tmp_path / f"stream{tag}", stream=True)
    m = export(lm, edits, tmp_path / f"memory{tag}", stream=False)
    assert s.streamed and not m.streamed
    assert (s.baked, s.sidecar) == (m.baked, m.sidecar)
    assert_same_export(s.path, m.path)
    return s, m


def plain_logits(folder, lm):
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    out = []
    for p in PROMPTS:
        with torch.no_grad():
            out.append(model(**lm.encode([p])).logits[0].float().numpy())
    return out


@pytest.mark.parametrize("arch", list(EXACT))
def test_streamed_equals_in_memory_and_plain_transformers(arch, tmp_path):
    tiny.save(arch, tmp_path / "src")
    lm = nl.load(tmp_path / "src")
    edits = nl.EditSet(EXACT[arch])
    before = {k: v.clone() for k, v in lm.hf.state_dict().items()}
    s, _ = both(lm, edits, tmp_path)
    assert s.sidecar == [] and len(s.baked) >= len(edits)
    assert sorted(p.name for p in s.path.glob("*.safetensors")) == ["model.safetensors"]
    for want, got in zip(lm.logits(PROMPTS, edits=edits), plain_logits(s.path, lm)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the loaded model is untouched
    after = lm.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sharded_source_gives_sharded_output(tmp_path):
    src = tmp_path / "src"
    tiny.build("llama").save_pretrained(src, max_shard_size="20KB")
    tiny.tokenizer().save_pretrained(src)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert len(shards) > 2
    lm = nl.load(src)
    edits = nl.EditSet(EXACT["llama"])
    s, m = both(lm, edits, tmp_path)
    assert sorted(p.name for p in s.path.glob("*.safetensors")) == shards
    index = json.loads((s.path / "model.safetensors.index.json").read_text())
    src_index = json.loads((src / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == src_index["weight_map"]
    for f in shards:                       # each tensor sits in its source shard
        with safe_open(str(s.path / f), framework="pt") as st:
            assert sorted(st.keys()) == sorted(k for k, v in index["weight_map"].items() if v == f)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                  for t in tensors(s.path).values())
    for want, got in zip(lm.logits(PROMPTS, edits=edits), plain_logits(s.path, lm)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype,want", [("float32", torch.float32), (None, torch.bfloat16)])
def test_tensors_in_the_dtype_the_model_was_loaded_with(tmp_path, dtype, want):
    src = tmp_path / "src"
    tiny.build("gpt2").to(torch.bfloat16).save_pretrained(src)
    tiny.tokenizer().save_pretrained(src)
    lm = nl.load(src, dtype=dtype)
    s, _ = both(lm, nl.EditSet(EXACT["gpt2"]), tmp_path)
    assert {t.dtype for t in tensors(s.path).values()} == {want}
    assert json.loads((s.path / "config.json").read_text())["dtype"] == str(want)[6:]


def test_sidecar_edits_and_a_reloaded_export(tmp_path):
    tiny.save("llama", tmp_path / "src")
    lm = nl.load(tmp_path / "src")
    width = lm.sites()["blocks.1.mlp.hook_post"]
    rng = np.random.default_rng(0)
    mf, mr = rng.normal(size=2), rng.normal(size=2)
    edits = nl.EditSet([
        nl.Prune("blocks.0.mlp.hook_post", [1]),
        nl.Prune("blocks.1.mlp.hook_post", [5], positions="last"),
        nl.Scale("blocks.1.mlp.hook_pre", [3], factor=4.0),     # not exact: act(ax) != a act(x)
        nl.Adjust("blocks.0.mlp.hook_pre", [1, 3], mf, [1.0, 2.0], mr, [0.5, 0.5], seed=7),
        nl.Gate("blocks.1.mlp.hook_post", np.zeros(width), np.ones(width), k=1.0),
        nl.TopK("blocks.0.mlp.hook_pre", keep_fraction=0.25)])
    s, _ = both(lm, edits, tmp_path)
    assert len(s.baked) == 1 and len(s.sidecar) == 5
    # the export loads with its sidecar; exporting it again (its own edits plus new ones) streams
    again = nl.load(s.path)
    assert len(again.base_edits) == 5
    more = nl.EditSet([nl.Scale("blocks.1.mlp.hook_post", [0, 7], factor=0.25)])
    s2, _ = both(again, more, tmp_path, tag="2")
    assert len(s2.baked) == 1 and len(s2.sidecar) == 5
    np.testing.assert_allclose(nl.load(s2.path).logits(PROMPTS)[0],
                               lm.logits(PROMPTS, edits=nl.EditSet(list(edits) + list(more)))[0],
                               atol=1e-5)


def test_streaming_holds_no_copy_of_the_model(tmp_path, monkeypatch):
    tiny.save("gpt2", tmp_path / "src")
    lm = nl.load(tmp_path / "src")

    def no_copy():
        raise AssertionError("the streamed export copied the whole model")
    monkeypatch.setattr(lm, "_export_copy", no_copy)
    report = export(lm, nl.EditSet(EXACT["gpt2"]), tmp_path / "out")
    assert report.streamed and len(report.baked) == len(EXACT["gpt2"])


def test_model_without_source_files_exports_in_memory(tmp_path):
    lm = tiny.lm("llama")                       # built in memory: no files
    edits = nl.EditSet(EXACT["llama"])
    report = lm.export(edits, tmp_path / "out")
    assert not report.streamed and report.sidecar == []
    with pytest.raises(InputError, match="no safetensors source files"):
        export(lm, edits, tmp_path / "out2", stream=True)


def test_a_changed_source_file_does_not_leak_into_the_export(tmp_path):
    """The streamed export writes the loaded weights, not the files they came from: after the
    source folder is overwritten with other values, the export still equals the in-memory
    export and the loaded model's own tensors (and not the new file's)."""
    src = tmp_path / "src"
    tiny.save("llama", src)
    lm = nl.load(src)
    loaded = {k: v.clone() for k, v in lm.hf.state_dict().items()}
    tiny.build("llama", seed=5).save_pretrained(src)      # same names and shapes, new values
    edits = nl.EditSet(EXACT["llama"])
    report = export(lm, edits, tmp_path / "out")
    assert report.streamed
    mem = export(lm, edits, tmp_path / "mem", stream=False)
    a, b = tensors(report.path), tensors(mem.path)
    assert all(torch.equal(a[k], b[k]) for k in b) and sorted(a) == sorted(b)
    new = tensors(src)
    untouched = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[untouched], loaded[untouched])
    assert not torch.equal(a[untouched], new[untouched])


def test_rows_in_small_runs_write_the_same(tmp_path, monkeypatch):
    """Big tensors go through in runs of rows: the result does not depend on the run size."""
    from neurolens.engine import export_stream
    monkeypatch.setattr(export_stream, "CHUNK_BYTES", 100)     # a few rows at a time
    tiny.save("gpt2", tmp_path / "src")
    lm = nl.load(tmp_path / "src", dtype="bfloat16")
    both(lm, nl.EditSet(EXACT["gpt2"]), tmp_path)


def test_shard_writer_reads_back_with_safetensors(tmp_path):
    from safetensors.torch import load_file

    from neurolens.engine.safetensors_files import ShardWriter, TensorInfo, read_header
    want = {"w": torch.randn(7, 5), "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.5),
            "half": torch.randn(3, 2).to(torch.bfloat16), "ids": torch.arange(5),
            "mask": torch.tensor([True, False, True]), "b": torch.randn(3).to(torch.float16)}
    infos = {k: TensorInfo(h.dtype, h.shape) for k, h in _headers(want, tmp_path).items()}
    with ShardWriter(tmp_path / "ours.safetensors", infos, {"format": "pt"}) as w:
        for k in w.names:
            parts = [want[k][:3], want[k][3:]] if k == "w" else [want[k]]   # rows in two runs
            for p in parts:
                w.write(k, p)
    got = load_file(tmp_path / "ours.safetensors")
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert read_header(tmp_path / "ours.safetensors") == infos
    with pytest.raises(ValueError, match="not written"):
        with ShardWriter(tmp_path / "short.safetensors", infos) as w:
            w.write(w.names[0], want[w.names[0]])


def _headers(tensors, tmp_path):
    from safetensors.torch import save_file

    from neurolens.engine.safetensors_files import read_header
    save_file(tensors, tmp_path / "ref.safetensors")
    return read_header(tmp_path / "ref.safetensors")
