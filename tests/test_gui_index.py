"""The dashboard's "Build index", driven in the real window (pytest-qt) on a tiny Llama: a
build cancelled part-way keeps its finished chunks and "Resume index" finishes it; the result
equals an uninterrupted build made by the engine API, and its top examples equal the largest
activations read with plain torch hooks at a hard-coded module path. Bad input is one line and
writes nothing."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
import torch

from test_gui import WAIT, load, window  # noqa: F401 - the window fixture

pytestmark = pytest.mark.gui

WORDS = ["red", "cat", "sat", "on", "the", "mat", "and", "blue", "dog", "ran", "7", "+", "="]
DOWN = "model.layers.{l}.mlp.down_proj"       # hook_post = the input of down_proj (Llama)
SITE, NEURON = "blocks.1.mlp.hook_post", 5


def docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) for _ in range(n)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """The user-data folder where "Build index" writes (a fresh one per test)."""
    d = tmp_path / "data"
    monkeypatch.setenv("NEUROLENS_SETTINGS_DIR", str(d))
    return d


def plain_max(folder, texts, layer, neuron) -> tuple[float, int, int]:
    """(largest activation, its document, its position) of one hook_post neuron over the texts,
    one document per forward, read at down_proj's input with a plain torch hook."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    got = []
    h = m.get_submodule(DOWN.format(l=layer)).register_forward_pre_hook(
        lambda _m, args: got.append(args[0][0, :, neuron].detach().clone()))
    try:
        with torch.no_grad():
            for t in texts:
                m(input_ids=torch.tensor([tok(t)["input_ids"]]))
    finally:
        h.remove()
    best = max(((float(v), d, p) for d, a in enumerate(got) for p, v in enumerate(a)),
               key=lambda x: x[0])
    return best


def _arrays(folder) -> dict:
    from neurolens.engine.neuron_index import NeuronIndex
    from neurolens.engine.neuron_index import files as index_files
    idx = NeuronIndex.open(folder)
    return {"n": (idx.n_docs, idx.n_tokens),
            **{f"{s}/{k}": v for s in idx.sites
               for k, v in index_files.read_state_arrays(idx.state, s).items()}}


def test_build_cancel_resume_and_show(qtbot, window, tiny_dirs, data_dir, tmp_path,  # noqa: F811
                                      monkeypatch):
    from neurolens.engine.neuron_index import build_index, user_index_dir
    from neurolens.engine.neuron_index import files as index_files
    w = window
    folder = tiny_dirs["llama"]
    load(qtbot, w, str(folder))
    ctl = w.attribution.index
    qtbot.waitUntil(lambda: w.dashboard.build_btn.text() == "Build index…", timeout=WAIT)
    texts = docs(40)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    ctl.chunk_docs = 8                      # 5 chunks, one state file written after each
    # hold the worker after the second chunk's file, so that Cancel lands part-way
    real, written, go = index_files.write_state, threading.Event(), threading.Event()
    calls = []

    def held_write(*a, **k):
        out = real(*a, **k)
        calls.append(out)
        if len(calls) == 2:
            written.set()
            go.wait(30)
        return out
    monkeypatch.setattr(index_files, "write_state", held_write)
    monkeypatch.setattr(ctl, "ask_corpus", lambda what: [str(corpus)])
    w.inspect(SITE, NEURON)
    qtbot.waitUntil(lambda: w.dashboard.state == "missing", timeout=WAIT)
    w.dashboard.build_btn.click()
    qtbot.waitUntil(written.is_set, timeout=WAIT)
    assert ctl.building and not w.dashboard.cancel_btn.isHidden()
    assert not w.dashboard.build_btn.isEnabled() and not w.run_btn.isEnabled()
    assert w.dashboard.progress.maximum() > 1          # the total of tokens is known
    w.dashboard.cancel_btn.click()
    go.set()
    qtbot.waitUntil(lambda: not ctl.building, timeout=WAIT)
    monkeypatch.setattr(index_files, "write_state", real)
    target = user_index_dir(w.worker.lm)
    part = _arrays(target)
    assert part["n"][0] == 16                          # two finished chunks were kept
    qtbot.waitUntil(lambda: w.dashboard.build_btn.text() == "Resume index", timeout=WAIT)
    assert "16 of 40 documents" in w.dashboard.build_status.text()
    qtbot.waitUntil(lambda: w.dashboard.state == "shown", timeout=WAIT)   # the part kept
    assert w.dashboard.dashboard.n_tokens == part["n"][1]
    # resume: the progress line counts tokens; the build ends at the corpus's token count
    lines = []
    w.dashboard.build_status.setText("")
    ctl_progress = ctl._progress

    def spy(done, total):
        ctl_progress(done, total)
        lines.append((done, total, w.dashboard.build_status.text()))
    monkeypatch.setattr(ctl, "_progress", spy)
    w.dashboard.build_btn.click()
    qtbot.waitUntil(lambda: not ctl.building and ctl.last is not None, timeout=WAIT)
    assert ctl.last["n_docs"] == 40 and not ctl.messages
    n_tokens = sum(len(w.worker.lm.tokenizer(t)["input_ids"]) for t in texts)
    assert ctl.last["n_tokens"] == n_tokens
    assert lines and lines[0][0] == part["n"][1]       # starts at the tokens already indexed
    assert all(t == n_tokens for _, t, _ in lines)
    assert re.fullmatch(r"[\d,]+ / [\d,]+ tokens · (about \d+ s left|estimating.*)",
                        lines[-1][2])
    assert lines[-1][2].startswith(f"{lines[-1][0]:,} / {n_tokens:,} tokens")
    # the dashboard shows the inspected neuron's top example at once: plain torch's maximum
    value, doc, pos = plain_max(folder, texts, 1, NEURON)
    qtbot.waitUntil(lambda: w.dashboard.state == "shown" and w.dashboard.dashboard.n_tokens
                    == n_tokens, timeout=WAIT)
    assert w.inspector.lower.currentWidget() is w.dashboard
    top = w.dashboard.dashboard.top[0]
    assert top.value == pytest.approx(value, abs=1e-5) and (top.doc, top.pos) == (doc, pos)
    assert w.dashboard.example_texts()[0] == f"{top.value:.3f}"
    ids = w.worker.lm.tokenizer(texts[doc])["input_ids"]
    assert top.tokens[top.focus] == w.worker.lm.tokenizer.decode([ids[pos]])
    qtbot.waitUntil(lambda: w.dashboard.build_btn.text() == "Extend index…", timeout=WAIT)
    # equals an uninterrupted build by the engine API (the same chunks). Run here once the
    # worker is idle: the engine's forwards on one model do not overlap (the app runs them all
    # on its one worker; a build here while the worker read a dashboard mixed their batches)
    full = _arrays(build_index(w.worker.lm, corpus, tmp_path / "ref", chunk_docs=8).folder)
    got = _arrays(target)
    assert got.keys() == full.keys()
    for k in full:
        np.testing.assert_array_equal(got[k], full[k], err_msg=k)


def test_build_bad_input_is_one_line(qtbot, window, tiny_dirs, data_dir, tmp_path,  # noqa: F811
                                     monkeypatch):
    from neurolens.engine.neuron_index import user_index_dir
    w = window
    load(qtbot, w, str(tiny_dirs["llama"]))
    ctl = w.attribution.index
    target = user_index_dir(w.worker.lm)

    def build(path):
        monkeypatch.setattr(ctl, "ask_corpus", lambda what: [str(path)])
        n = len(ctl.messages)
        qtbot.waitUntil(lambda: w.dashboard.build_btn.isEnabled(), timeout=WAIT)
        w.dashboard.build_btn.click()
        qtbot.waitUntil(lambda: not ctl.building and len(ctl.messages) > n, timeout=WAIT)
        return ctl.messages[-1]

    # a corpus that is not text: one line, nothing written
    binary = tmp_path / "weights.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    msg = build(binary)
    assert "not text" in msg and "\n" not in msg
    assert w.status.text() == msg and w.dashboard.build_status.text() == msg
    assert not target.exists() and not w.errors         # no dialog either
    # a JSONL line without text, after good ones: refused before the first chunk is written
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs(5)) + '{"txt": 1}\n')
    assert "'text'" in build(bad) and not target.exists()
    # an index of other weights, or of a newer format, in the folder: refused, left alone
    good = tmp_path / "good.txt"
    good.write_text("\n".join(docs(4)) + "\n")
    target.mkdir(parents=True)
    manifest = {"format": "neurolens.index/1", "digest": "0" * 32, "sites": [], "sources": []}
    (target / "manifest.json").write_text(json.dumps(manifest))
    assert "other weights" in build(good)
    (target / "manifest.json").write_text(json.dumps({**manifest, "format": "neurolens.index/9"}))
    assert "newer" in build(good)
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert w.dashboard.build_btn.isEnabled() and not w.errors


def test_progress_text_and_time_left():
    from neurolens.gui.presenters import index as pres
    # 1,000 tokens since the start (at 200) in 4 s: 250 tokens/s; 48,800 left -> 195.2 s
    assert pres.seconds_left(1200, 50000, 200, 4.0) == pytest.approx(195.2)
    assert pres.seconds_left(200, 50000, 200, 4.0) is None      # no rate yet
    assert pres.progress_text(1234, 50000, 40.2) == "1,234 / 50,000 tokens · about 40 s left"
    assert pres.progress_text(1234, 50000, 195.2) == "1,234 / 50,000 tokens · about 3 min left"
    assert pres.progress_text(0, 9, None) == "0 / 9 tokens · estimating the time left…"
    assert pres.button_text("partial") == "Resume index"


def test_a_small_user_index_does_not_hide_a_bigger_one_beside_the_model(tmp_path, data_dir):
    """A "Build index" cancelled early (the user-data folder) against the index shipped beside
    the model: the dashboards read the one over more tokens, whichever folder it is in."""
    import tiny

    import neurolens as nl
    from neurolens.engine.neuron_index import build_index, find_index, user_index_dir
    lm = nl.load(tiny.save("llama", tmp_path / "m"))
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text("\n".join(docs(3)) + "\n")
    big.write_text("\n".join(docs(30, seed=1)) + "\n")
    beside = tmp_path / "m" / "index"
    build_index(lm, [str(small)], user_index_dir(lm), chunk_docs=8)
    assert find_index(lm) == user_index_dir(lm)          # the only one
    build_index(lm, [str(big)], beside, chunk_docs=8)
    assert find_index(lm) == beside                      # more tokens than the user's
    build_index(lm, [str(big)], user_index_dir(lm), chunk_docs=8)   # extended: now the larger
    assert find_index(lm) == user_index_dir(lm)


def test_no_digest_is_computed_where_no_index_could_match(tmp_path, data_dir, monkeypatch):
    """Hashing every weight takes seconds at 8B: looking for an index (the dashboard, the build
    bar's state) reads only manifests until one has this model's sites and widths."""
    import tiny

    import neurolens as nl
    from neurolens.engine.neuron_index import build_index, find_index
    from neurolens.engine.neuron_index import index as index_mod
    from neurolens.engine.neuron_index import user_index_dir
    from neurolens.gui import jobs_attribute
    lm = nl.load(tiny.save("llama", tmp_path / "m"))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(docs(4)) + "\n")
    folder = build_index(lm, [str(corpus)], user_index_dir(lm), chunk_docs=8).folder
    manifest = folder / "manifest.json"
    real = json.loads(manifest.read_text())
    other = {**real, "widths": {s: 96 for s in real["widths"]}}    # another model's widths
    manifest.write_text(json.dumps(other))
    lm = nl.load(tmp_path / "m")                                   # no cached digest
    calls = []
    digest = index_mod.weights_digest
    monkeypatch.setattr(index_mod, "weights_digest", lambda m: calls.append(1) or digest(m))
    assert find_index(lm) is None and calls == []
    assert jobs_attribute._user_index(lm)["state"] == "none" and calls == []
    manifest.write_text(json.dumps(real))                          # this model's widths
    assert find_index(lm) == folder and calls                      # plausible: digest checked
