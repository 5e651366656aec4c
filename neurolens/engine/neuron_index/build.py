"""Stream a corpus through a language model and keep, per neuron of the chosen sites, the
top-k activating (document, position) pairs, a fixed-bin histogram and the firing density.

Memory stays bounded: one chunk of documents is read and tokenized at a time, the statistics
live on the model's device (:mod:`.accumulate`, updated inside the capture hooks), and after
every chunk they are written to a new state file (:mod:`.files`), atomically. A cancelled or
killed build keeps every finished chunk; running the build again resumes after the last one,
and running it with more text (a longer file, another file, a higher ``max_docs``) extends the
index. Documents keep their numbers: a source's documents follow those of the sources before it.
Documents longer than ``seq_len`` tokens run as consecutive segments of ``seq_len`` tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch

from neurolens.engine.events import BatchDone, Cancelled as CancelledEvent, Failed
from neurolens.engine.hooks import CancelToken
from neurolens.engine.neuron_index import files
from neurolens.engine.neuron_index.accumulate import RangeProbe, Scratch, SiteAccumulator
from neurolens.engine.neuron_index.corpus import Source, TextHash, as_paths, source_path
from neurolens.engine.neuron_index.digest import weights_digest
from neurolens.engine.neuron_index.index import NeuronIndex
from neurolens.engine.runner import forward_events
from neurolens.errors import Cancelled, InputError

DEFAULT_SITES = ("blocks.*.mlp.hook_post",)
DEFAULTS = {"top_k": 20, "bins": 32, "context": 16, "threshold": 0.0}
#: the first chunk of a new index (which fixes the histogram's bins) ends after this many tokens,
#: or this many bytes of activations, which it keeps until the bins are fixed
RANGE_TOKENS = 8192
RANGE_BYTES = 256 << 20


# -- settings and sources ------------------------------------------------------------------------
def seq_len_for(model, seq_len: int | None = None) -> int:
    """The segment length of a build: ``seq_len``, else min(256, the model's positions)."""
    if seq_len is not None:
        if seq_len < 2:
            raise InputError("seq_len must be >= 2")
        return int(seq_len)
    cfg = model.hf.config
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(min(256, n or 256))


def _settings(model, folder: Path, old: dict | None, sites, asked: dict) -> dict:
    """The build settings: the existing index's (a value given now must agree) or new ones."""
    if old is not None:
        for k, v in asked.items():
            if v is not None and float(v) != float(old[k]):
                raise InputError(f"the index at {folder} was built with {k}={old[k]}; "
                                 f"build a new index for {k}={v}")
        if sites is not None and sorted(model.resolve_sites(sites)) != sorted(old["sites"]):
            raise InputError(f"the index at {folder} covers {', '.join(old['sites'])}; "
                             "build a new index for other sites")
        return old
    names = model.resolve_sites(sites if sites is not None else DEFAULT_SITES)
    out = {k: (v if v is not None else DEFAULTS.get(k)) for k, v in asked.items()}
    out["seq_len"] = seq_len_for(model, asked["seq_len"])
    if out["top_k"] < 1 or out["bins"] < 1 or out["context"] < 0:
        raise InputError("top_k and bins must be >= 1 and context >= 0")
    out["threshold"] = float(out["threshold"])
    return {**out, "sites": names, "widths": {s: model.site_width(s) for s in names}}


def _plan(corpus, folder: Path, prev: list[dict]) -> tuple[list[dict], int | None]:
    """The sources after this build, and the position of the first one that reads new
    documents (None: nothing to read). Sources the index holds keep their documents; only
    the last one may grow (documents after it are numbered already)."""
    entries = [dict(e) for e in prev]
    first = None
    for p in as_paths(corpus):
        src = Source(p)
        rp = src.path.resolve()
        hit = next((i for i, e in enumerate(entries)
                    if source_path(e, folder).resolve() == rp), None)
        if hit is None:
            entries.append({"path": str(rp), "rel": os.path.relpath(rp, folder.resolve()),
                            "kind": src.kind, "n_docs": 0, "hash": TextHash().hexdigest(),
                            "source": src})
            first = len(entries) - 1 if first is None else first
        elif hit == len(prev) - 1 and first is None:
            entries[hit]["source"] = src
            first = hit
    return entries, first


def _docs(entries: list[dict], first: int | None, n_docs: int,
          limit: int) -> Iterator[tuple[int, str, tuple]]:
    """(document number, text, where) of the documents still to index, at most up to
    ``limit``; ``where`` = (source position, its documents read, their digest), recorded in
    the source entries once the document's chunk is written."""
    if first is None:
        return
    doc = n_docs
    for i in range(first, len(entries)):
        e = entries[i]
        skip, h = e["n_docs"], TextHash()
        seen = 0
        for j, text in enumerate(e["source"].docs()):
            seen = j + 1
            h.update(text)
            if j < skip:
                if j == skip - 1 and h.hexdigest() != e["hash"]:
                    raise InputError(f"corpus {e['path']} changed since the index was built "
                                     "(its first documents differ); build a new index")
                continue
            if doc >= limit:
                return
            yield doc, text, (i, j + 1, h.hexdigest())
            doc += 1
        if seen < skip:
            raise InputError(f"corpus {e['path']} shrank since the index was built")


def _foreign(folder: Path, corpus) -> bool:
    """Whether a folder holds anything but the corpus itself (which may live in the index)."""
    mine = {p.resolve() for p in as_paths(corpus)}
    return any(p.resolve() not in mine for p in folder.iterdir())


def _public(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k in ("path", "rel", "kind", "n_docs", "hash")}
            for e in entries]


# -- forwards ----------------------------------------------------------------------------------
def _encoder(model):
    pad, left = model.pad_id, getattr(model.tokenizer, "padding_side", "left") == "left"

    def encode(rows):
        L = max(len(r) for r in rows)
        ids = [([pad] * (L - len(r)) + r) if left else (r + [pad] * (L - len(r))) for r in rows]
        mask = [([0] * (L - len(r)) + [1] * len(r)) if left else
                ([1] * len(r) + [0] * (L - len(r))) for r in rows]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    return encode


def _segments(docs: list[int], ids: list[list[int]], seq_len: int):
    """Documents as token segments, longest first (little padding per batch): rows of ids,
    and the document and first position of each row."""
    segs = [(len(toks[s:s + seq_len]), doc, s, toks[s:s + seq_len])
            for doc, toks in zip(docs, ids) for s in range(0, len(toks), seq_len)]
    segs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return ([s[3] for s in segs], torch.tensor([s[1] for s in segs], dtype=torch.long),
            torch.tensor([s[2] for s in segs], dtype=torch.long))


def _first_cut(ids: list[list[int]], width: int) -> int:
    """How many documents make the first chunk of a new index (whose activations are kept
    until its min and max fix the bins): up to ``RANGE_TOKENS`` tokens, and at most
    ``RANGE_BYTES`` of float32 activations over all sites (``width`` neurons in all), but at
    least 256 tokens."""
    cap = max(256, min(RANGE_TOKENS, RANGE_BYTES // (4 * max(width, 1))))
    total = 0
    for i, t in enumerate(ids):
        total += len(t)
        if total >= cap:
            return i + 1
    return len(ids)


def _run(model, rows, handlers: dict, batch_size: int, cancel: CancelToken, report) -> None:
    """Plain forwards of ``rows`` with ``handlers`` on their sites (and the model's own
    edits), stopping each forward after the last site; raises Cancelled or the error."""
    if not rows:
        return
    factory = model.session_factory(None, handlers)
    stop = getattr(model, "_modules_run_once", lambda: False)()
    for ev in forward_events(model, rows, factory, batch_size, cancel, encode=_encoder(model),
                             stop_early=stop):
        if isinstance(ev, CancelledEvent):
            raise Cancelled("index build cancelled")
        if isinstance(ev, Failed):
            raise ev.error
        if isinstance(ev, BatchDone):
            report(ev.done, ev.total)


def _first_chunk(model, st: dict, rows, seg_doc, seg_start, batch_size, cancel,
                 report) -> dict[str, SiteAccumulator]:
    """The first chunk of a new index, in one pass: its rows are kept (bounded by
    ``_first_cut``) while its min and max fix the bins, then fed to new accumulators."""
    probes = {s: RangeProbe(seg_doc, seg_start) for s in st["sites"]}
    _run(model, rows, probes, batch_size, cancel, report)
    accs = {}
    scratch = Scratch()      # the sites run one after another: they share work buffers
    for s, p in probes.items():
        lo, step = p.bins(st["widths"][s], st["bins"])
        accs[s] = SiteAccumulator(st["top_k"], st["bins"], st["threshold"], lo, step,
                                  seg_doc, seg_start, scratch=scratch)
        while p.kept:
            accs[s].update(*p.kept.pop(0))
    return accs


# -- the build ---------------------------------------------------------------------------------
def build_index(model, corpus, out_dir, *, sites=None, top_k: int | None = None,
                chunk_docs: int = 256, context: int | None = None,
                threshold: float | None = None, bins: int | None = None,
                seq_len: int | None = None, batch_size: int = 16, max_docs: int | None = None,
                progress=None, cancel: CancelToken | None = None):
    """Build, resume or extend the index in ``out_dir`` over ``corpus`` (a path or a list:
    text-lines files, JSONL files with a "text" field, folders of .txt files); returns the
    :class:`~neurolens.engine.neuron_index.NeuronIndex`. Defaults for a new index: sites
    ``blocks.*.mlp.hook_post``, top_k 20, 32 bins, context 16, threshold 0.0 (density: the
    share of tokens above it), seq_len min(256, the model's positions). An existing index keeps
    its settings (a different value given raises). ``progress(done, total)`` counts documents;
    ``cancel`` stops at the next batch (the index keeps its finished chunks) and raises
    :class:`neurolens.errors.Cancelled`."""
    if getattr(model, "kind", "lm") != "lm" or getattr(model, "tokenizer", None) is None:
        raise InputError("the neuron index works on language models with a tokenizer")
    if chunk_docs < 1 or batch_size < 1:
        raise InputError("chunk_docs and batch_size must be >= 1")
    if max_docs is not None and max_docs < 1:
        raise InputError("max_docs must be >= 1")
    cancel = cancel or CancelToken()
    folder = Path(out_dir)
    digest = weights_digest(model)
    old = None
    if (folder / files.MANIFEST).exists():
        old = files.read_manifest(folder)
        if old.get("digest") != digest:
            raise InputError(f"the index at {folder} was built for other weights (digest "
                             f"{str(old.get('digest'))[:12]}, this model {digest[:12]}); "
                             "choose another folder")
    elif folder.exists() and (not folder.is_dir() or _foreign(folder, corpus)):
        raise InputError(f"{folder} exists and is not a neuron index; choose an empty folder")
    asked = {"top_k": top_k, "bins": bins, "context": context, "threshold": threshold,
             "seq_len": seq_len}
    st = _settings(model, folder, old, sites, asked)
    latest = files.latest_state(folder) if old is not None else None
    meta = latest[1] if latest else {"n_docs": 0, "n_tokens": 0, "sources": [],
                                     "seconds": 0.0}
    if latest and meta.get("digest") != digest:
        raise InputError(f"corrupt index {folder}: its chunk {latest[0].name} belongs to "
                         "other weights")
    entries, first = _plan(corpus, folder, meta["sources"])
    limit = max_docs if max_docs is not None else 1 << 62
    todo = sum(e["source"].count() - e["n_docs"] for e in entries[first:]) \
        if first is not None else 0
    total = min(meta["n_docs"] + max(todo, 0), max(limit, meta["n_docs"]))
    if total == 0:
        names = ", ".join(str(p) for p in as_paths(corpus))
        raise InputError(f"the corpus {names} has no documents")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": files.FORMAT, "digest": digest,
                "model": {"name_or_path": str(getattr(model, "name_or_path", "")),
                          "fingerprint": model.fingerprint, "model_type": model.model_type},
                **{k: st[k] for k in ("sites", "widths", "top_k", "bins", "context",
                                      "threshold", "seq_len")}}
    if old is None:
        files.write_json(folder / files.MANIFEST, {**manifest, "n_docs": 0, "n_tokens": 0,
                                                   "sources": _public(entries)})
        tok_dir = folder / "tokenizer"
        if not tok_dir.exists():
            tmp = folder / "tokenizer.tmp"
            model.tokenizer.save_pretrained(str(tmp))
            os.replace(tmp, tok_dir)
    files.clean(folder, latest[0] if latest else None)
    saved = {s: files.read_state_arrays(latest[0], s) for s in st["sites"]} if latest else {}
    accs: dict[str, SiteAccumulator] = {}
    n_docs, n_tokens, seconds = meta["n_docs"], meta["n_tokens"], float(meta.get("seconds", 0))
    docs = _docs(entries, first, n_docs, limit)
    pending: list = []
    while True:
        t0 = time.perf_counter()
        chunk = pending + list(islice(docs, chunk_docs - len(pending)))
        if not chunk:
            break
        ids = model.tokenizer([c[1] for c in chunk])["input_ids"]
        if not accs and not saved:   # a new index: a short first chunk fixes the bins
            cut = _first_cut(ids, sum(st["widths"].values()))
            chunk, pending, ids = chunk[:cut], chunk[cut:], ids[:cut]
        else:
            pending = []
        rows, seg_doc, seg_start = _segments([c[0] for c in chunk], ids, st["seq_len"])
        size = len(chunk)

        def report(done, tot, base=n_docs, size=size):
            if progress is not None:
                progress(base + size * done // max(tot, 1), total)
        if not accs and not saved:
            accs = _first_chunk(model, st, rows, seg_doc, seg_start, batch_size, cancel, report)
        else:
            if not accs:
                scratch = Scratch()
                accs = {s: SiteAccumulator(st["top_k"], st["bins"], st["threshold"],
                                           saved[s]["lo"], saved[s]["step"], seg_doc,
                                           seg_start, saved[s], scratch) for s in st["sites"]}
            for a in accs.values():
                a.seg_doc, a.seg_start = seg_doc, seg_start
            _run(model, rows, accs, batch_size, cancel, report)
        n_docs = chunk[-1][0] + 1
        for _, _, (i, read, digest_i) in chunk:
            entries[i]["n_docs"], entries[i]["hash"] = read, digest_i
        n_tokens += sum(len(r) for r in rows)
        seconds += time.perf_counter() - t0
        meta = {"format": files.FORMAT, "digest": digest, "n_docs": n_docs,
                "n_tokens": n_tokens, "seconds": round(seconds, 3), "sources": _public(entries)}
        path = files.write_state(folder, n_docs, {s: a.arrays() for s, a in accs.items()}, meta)
        files.write_json(folder / files.MANIFEST, {**manifest, **meta, "state": path.name,
                                                   "tokens_per_s": round(n_tokens / seconds)})
        files.clean(folder, path)
        if progress is not None:
            progress(n_docs, total)
    if n_docs == 0:
        raise InputError("the corpus has no documents")
    return NeuronIndex.open(folder, model=model)
