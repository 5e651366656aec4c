"""Neuron index (issue 27, item 2): top-k examples, histograms and densities against a
brute-force reference read with plain torch forward hooks at hard-coded module paths of a tiny
GPT-2; resume after a killed run; extending equals building at once; the weights digest; the
`neurolens index` CLI's one-line errors."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

import tiny
from conftest import needs_demo

from neurolens.cli import main
from neurolens.engine.hooks import CancelToken
from neurolens.engine.lm import LanguageModel
from neurolens.engine.neuron_index import (NeuronIndex, build_index, find_index,
                                           weights_digest)
from neurolens.engine.neuron_index import accumulate
from neurolens.engine.neuron_index import files as index_files
from neurolens.errors import Cancelled, InputError

WORDS = ["red", "cat", "sat", "on", "the", "mat", "and", "blue", "dog", "ran", "7", "+", "="]
SITES = ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]


def docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 12)))) for _ in range(n)]


def write_lines(path, texts):
    path.write_text("\n".join(texts) + "\n")
    return path


@pytest.fixture(scope="module")
def gpt2():
    return tiny.lm("gpt2")


def reference(hf, tok, texts, seq_len=None):
    """Every token's post-GELU activation at the hard-coded module ``transformer.h[l].mlp.act``
    (plain forward hooks, one document (segment) per forward): {layer: ([n, width], doc, pos)}."""
    acts = {0: [], 1: []}
    where = []
    hooks = [hf.transformer.h[layer].mlp.act.register_forward_hook(
        lambda m, a, out, layer=layer: acts[layer].append(out[0].detach().clone()))
        for layer in (0, 1)]
    try:
        with torch.no_grad():
            for d, text in enumerate(texts):
                ids = tok(text)["input_ids"]
                L = seq_len or len(ids)
                for s in range(0, len(ids), L):
                    hf(input_ids=torch.tensor([ids[s:s + L]]))
                    where += [(d, s + p) for p in range(len(ids[s:s + L]))]
    finally:
        for h in hooks:
            h.remove()
    doc = np.array([w[0] for w in where])
    pos = np.array([w[1] for w in where])
    return {layer: (torch.cat(a).numpy(), doc, pos) for layer, a in acts.items()}


def check_against(idx: NeuronIndex, ref, k: int, atol: float) -> None:
    for layer, (A, doc, pos) in ref.items():
        site = f"blocks.{layer}.mlp.hook_post"
        assert idx.n_tokens == A.shape[0]
        for n in range(A.shape[1]):
            col = A[:, n]
            db = idx.dashboard(site, n, k=k)
            order = np.argsort(-col, kind="stable")[:k]
            got = np.array([e.value for e in db.top])
            np.testing.assert_allclose(got, col[order], atol=atol, rtol=0)
            # (doc, pos) where the reference value is clear of its neighbours (no tie)
            srt = np.sort(col)[::-1]
            for j, e in enumerate(db.top):
                gap = min(srt[j - 1] - srt[j] if j else np.inf,
                          srt[j] - srt[j + 1] if j + 1 < len(srt) else np.inf)
                if gap > 10 * atol:
                    assert (e.doc, e.pos) == (doc[order[j]], pos[order[j]])
            assert db.density == pytest.approx((col > 0).mean(), abs=1e-12)
            assert db.hist_counts.sum() == A.shape[0]
            edges = db.hist_edges                  # under, regular bins, over
            inner = edges[1:-1]
            ref_bins = np.clip(np.searchsorted(inner, col, side="right"), 0, len(inner))
            ref_counts = np.bincount(ref_bins, minlength=len(inner) + 1)
            # a value within float rounding of an edge may fall on either side
            assert np.abs(ref_counts - db.hist_counts).sum() <= 2
            assert edges[0] <= col.min() + 1e-6 and edges[-1] >= col.max() - 1e-6
            assert db.mean == pytest.approx(col.mean(), abs=1e-5)


def test_top_examples_histograms_density_match_plain_hooks(gpt2, tmp_path):
    texts = docs(24)
    corpus = write_lines(tmp_path / "c.txt", texts)
    idx = build_index(gpt2, corpus, tmp_path / "ix", sites=SITES, top_k=5, chunk_docs=7,
                      batch_size=1, bins=8)
    ref = reference(gpt2.hf, gpt2.tokenizer, texts)
    check_against(idx, ref, 5, atol=1e-6)
    # the first chunk (7 documents) fixes the bins: its smallest value is the first regular
    # edge, its largest lies inside the last regular bin
    A, doc, _ = ref[0]
    first = A[doc < 7]
    edges = idx.dashboard(SITES[0], 3).hist_edges
    assert edges[1] == pytest.approx(first[:, 3].min(), abs=1e-7)
    assert edges[-3] < first[:, 3].max() <= edges[-2]
    # context windows: the focus token is the token at (doc, pos)
    e = idx.dashboard(SITES[1], 0, k=1).top[0]
    ids = gpt2.tokenizer(texts[e.doc])["input_ids"]
    assert e.tokens[e.focus] == gpt2.tokenizer.decode([ids[e.pos]])
    assert "".join(e.tokens) in texts[e.doc]


@pytest.mark.parametrize("block_rows", [None, 5, "masked"])
def test_padded_batches_and_long_documents_segmented(gpt2, tmp_path, monkeypatch, block_rows):
    """Left-padded batches, documents longer than a segment; the statistics over blocks of 5
    real rows (top-k candidates in several blocks), and in one masked pass per batch (as on
    a GPU: pad rows weighted 0)."""
    if block_rows == "masked":
        monkeypatch.setattr(accumulate, "SPLIT_CPU", False)
    elif block_rows is not None:
        monkeypatch.setattr(accumulate, "BLOCK_FLOATS", block_rows * gpt2.site_width(SITES[0]))
    texts = docs(10, seed=1) + [" ".join(["red cat sat on the mat"] * 12)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    idx = build_index(gpt2, corpus, tmp_path / "ix", sites=SITES, top_k=4, chunk_docs=4,
                      batch_size=3, seq_len=16)
    check_against(idx, reference(gpt2.hf, gpt2.tokenizer, texts, seq_len=16), 4, atol=2e-5)
    # shading recomputes the neuron over the window as the build ran it
    db = idx.dashboard(SITES[0], 5, k=3, model=gpt2)
    for e in db.top:
        assert e.acts[e.focus] == pytest.approx(e.value, abs=2e-5)


def _state(folder) -> dict:
    idx = NeuronIndex.open(folder)
    out = {s: index_files.read_state_arrays(idx.state, s) for s in idx.sites}
    return {"n_docs": idx.n_docs, "n_tokens": idx.n_tokens, "arrays": out}


def _assert_same(a, b, exact=True):
    assert (a["n_docs"], a["n_tokens"]) == (b["n_docs"], b["n_tokens"])
    for s in a["arrays"]:
        for k, v in a["arrays"][s].items():
            w = b["arrays"][s][k]
            if exact:
                np.testing.assert_array_equal(v, w, err_msg=f"{s}/{k}")
            elif k in ("top_doc", "top_pos"):
                continue      # ties may order differently; values and histograms must agree
            else:
                np.testing.assert_allclose(v, w, rtol=1e-6, atol=1e-6, err_msg=f"{s}/{k}")


def test_resume_after_kill_equals_uninterrupted(gpt2, tmp_path, monkeypatch):
    corpus = write_lines(tmp_path / "c.txt", docs(30, seed=2))
    kw = dict(sites=SITES, top_k=4, chunk_docs=8, batch_size=4)
    build_index(gpt2, corpus, tmp_path / "full", **kw)
    # kill while the third chunk's file is being renamed into place: its .tmp stays behind
    real = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        if str(dst).endswith(".safetensors"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed")
        return real(src, dst)
    monkeypatch.setattr(index_files.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        build_index(gpt2, corpus, tmp_path / "ix", **kw)
    monkeypatch.setattr(index_files.os, "replace", real)
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert "state-000000016.safetensors" in names
    assert "state-000000024.safetensors.tmp" in names
    assert NeuronIndex.open(tmp_path / "ix").n_docs == 16
    build_index(gpt2, corpus, tmp_path / "ix", **kw)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "ix").iterdir())
    _assert_same(_state(tmp_path / "ix"), _state(tmp_path / "full"))

    # cancel after the first chunk: that chunk survives, the build resumes from it
    tok = CancelToken()

    def progress(done, total):
        if done >= 8:
            tok.cancel()
    with pytest.raises(Cancelled):
        build_index(gpt2, corpus, tmp_path / "cx", cancel=tok, progress=progress, **kw)
    assert NeuronIndex.open(tmp_path / "cx").n_docs == 8
    build_index(gpt2, corpus, tmp_path / "cx", **kw)
    _assert_same(_state(tmp_path / "cx"), _state(tmp_path / "full"))


def test_extend_equals_building_at_once(gpt2, tmp_path):
    a = write_lines(tmp_path / "a.txt", docs(13, seed=3))
    folder = tmp_path / "more"
    folder.mkdir()
    for i, t in enumerate(docs(5, seed=4)):
        (folder / f"{i:02d}.txt").write_text(t)
    kw = dict(sites=SITES, top_k=4, chunk_docs=5, batch_size=4)
    build_index(gpt2, [a, folder], tmp_path / "once", **kw)
    build_index(gpt2, a, tmp_path / "ext", max_docs=9, **kw)
    assert NeuronIndex.open(tmp_path / "ext").n_docs == 9
    build_index(gpt2, a, tmp_path / "ext", **kw)                 # the rest of a.txt
    idx = build_index(gpt2, [a, folder], tmp_path / "ext", **kw)  # then a folder after it
    assert idx.n_docs == 18
    _assert_same(_state(tmp_path / "ext"), _state(tmp_path / "once"), exact=False)
    assert idx.doc_text(13) == (folder / "00.txt").read_text()
    # a changed source is refused when it is read again, not silently renumbered
    (folder / "00.txt").write_text("changed")
    (folder / "05.txt").write_text("new document")
    with pytest.raises(InputError, match="changed since the index was built"):
        build_index(gpt2, [a, folder], tmp_path / "ext", **kw)


def test_weights_digest(gpt2, tmp_path):
    d = weights_digest(gpt2)
    assert weights_digest(gpt2) == d                            # cached
    assert weights_digest(tiny.lm("gpt2")) == d                 # same weights, new object
    hf = copy.deepcopy(gpt2.hf)
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_proj.weight[7, 3] = 0.0     # prune one weight
    pruned = LanguageModel(hf, gpt2.tokenizer, name_or_path="pruned")
    assert pruned.fingerprint == gpt2.fingerprint               # the old key misses it
    assert weights_digest(pruned) != d
    bf = LanguageModel(copy.deepcopy(gpt2.hf).to(torch.bfloat16), gpt2.tokenizer)
    assert weights_digest(bf) not in (d, weights_digest(pruned))
    # an index is found for its own weights only
    corpus = write_lines(tmp_path / "c.txt", docs(6))
    os.environ["NEUROLENS_SETTINGS_DIR"] = str(tmp_path / "data")
    try:
        build_index(gpt2, corpus, tmp_path / "data" / "indexes" / d, sites=SITES[:1])
        assert find_index(gpt2) == tmp_path / "data" / "indexes" / d
        assert find_index(pruned) is None
        with pytest.raises(InputError, match="other weights"):
            NeuronIndex.open(find_index(gpt2), model=pruned)
    finally:
        os.environ.pop("NEUROLENS_SETTINGS_DIR")


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("neurolens: error: ")
    return err


def test_cli(tiny_dirs, tmp_path, capsys):
    g, ll = str(tiny_dirs["gpt2"]), str(tiny_dirs["llama"])
    corpus = write_lines(tmp_path / "c.txt", docs(12))
    out = str(tmp_path / "ix")
    assert main(["index", "build", "-m", g, "--corpus", str(corpus), "--out", out,
                 "--site", "blocks.1.mlp.hook_post", "--top-k", "3", "--quiet",
                 "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["n_docs"] == 12 and built["sites"] == ["blocks.1.mlp.hook_post"]
    assert main(["index", "show", "--index", out, "--site", "blocks.1.mlp.hook_post",
                 "--neuron", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["top"]) == 3 and shown["n_tokens"] == built["n_tokens"]
    assert main(["index", "top", "--index", out, "--site", "blocks.1.mlp.hook_post",
                 "-k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    binary = tmp_path / "w.bin"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    assert "no documents" in _err(capsys, ["index", "build", "-m", g, "--corpus", str(empty),
                                           "--out", str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()
    assert "not text" in _err(capsys, ["index", "build", "-m", g, "--corpus", str(binary),
                                       "--out", str(tmp_path / "b")])
    assert "not found" in _err(capsys, ["index", "build", "-m", g, "--corpus",
                                        str(tmp_path / "nope.txt"), "--out", out])
    assert "matches no site" in _err(capsys, ["index", "build", "-m", g, "--corpus",
                                              str(corpus), "--out", str(tmp_path / "s"),
                                              "--site", "blocks.*.mlp.hook_nope"])
    assert "not in this index" in _err(capsys, ["index", "show", "--index", out, "--site",
                                                "blocks.0.mlp.hook_post", "--neuron", "0"])
    assert "out of range" in _err(capsys, ["index", "show", "--index", out, "--site",
                                           "blocks.1.mlp.hook_post", "--neuron", "9999"])
    assert "other weights" in _err(capsys, ["index", "show", "-m", ll, "--index", out,
                                            "--site", "blocks.1.mlp.hook_post", "--neuron",
                                            "0"])
    assert "other weights" in _err(capsys, ["index", "build", "-m", ll, "--corpus",
                                            str(corpus), "--out", out])
    assert "not found" in _err(capsys, ["index", "show", "--index", str(tmp_path / "gone"),
                                        "--site", "x", "--neuron", "0"])
    assert "no index for this model" in _err(capsys, ["index", "show", "-m", ll, "--site",
                                                      "blocks.1.mlp.hook_post", "--neuron",
                                                      "0"])
    manifest = tmp_path / "ix" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "format": "neurolens.index/9"}))
    assert "newer" in _err(capsys, ["index", "info", "--index", out])


@needs_demo
def test_shipped_demo_index():
    """The index beside the demo model: found by its digest, small, and its top examples are
    the demo model's activations at those (document, position) pairs."""
    from neurolens.engine.loading import load
    from neurolens.resources import model_path
    lm = load(None)
    folder = find_index(lm)
    assert folder == model_path() / "index"
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 5e6
    idx = NeuronIndex.open(folder, model=lm)
    assert idx.sites == [f"blocks.{i}.mlp.hook_post" for i in range(4)] and idx.n_tokens > 1e5
    n, _ = idx.top_neurons("blocks.2.mlp.hook_post", k=1)[0]
    db = idx.dashboard("blocks.2.mlp.hook_post", n, k=2, model=lm)
    for e in db.top:
        assert e.acts[e.focus] == pytest.approx(e.value, rel=1e-4, abs=1e-4)
