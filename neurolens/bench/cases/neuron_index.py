"""Neuron index (issue 27, item 5): building an index of every hook_post site of the demo model
against plain forwards of the same corpus (same segments, batches and padding), and the resident
memory of a build as the corpus grows (a fresh process: ``python -m
neurolens.bench.cases.neuron_index N_TOKENS TMPDIR [MODEL]`` prints one JSON line).

The corpus is the demo model's training stream (seeded), written as a JSONL file."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from neurolens.bench.measure import Case, alternate, check, fresh_process

SITES = ["blocks.*.mlp.hook_post"]


def write_corpus(path: Path, tokenizer, n_tokens: int, seed: int = 11) -> int:
    """Training-stream documents until ``n_tokens`` tokens; returns the number of documents."""
    from neurolens.evals.corpus import TrainingStream
    stream = TrainingStream(seed=seed)
    total = n = 0
    with open(path, "w") as f:
        while total < n_tokens:
            doc = stream.document(600)
            total += len(tokenizer(doc)["input_ids"])
            f.write(json.dumps({"text": doc}) + "\n")
            n += 1
    return n


def _plain(lm, corpus: Path, seq_len: int, batch: int):
    """Plain forwards over the corpus as the index runs it: every document tokenized, cut into
    ``seq_len`` segments, longest first, left-padded batches."""
    import torch
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    pad = lm.pad_id

    def run():
        ids = lm.tokenizer(texts)["input_ids"]
        segs = sorted((t[s:s + seq_len] for t in ids for s in range(0, len(t), seq_len)),
                      key=len, reverse=True)
        with torch.inference_mode():
            for i in range(0, len(segs), batch):
                rows = segs[i:i + batch]
                L = len(rows[0])
                x = torch.tensor([[pad] * (L - len(r)) + r for r in rows])
                m = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows])
                kw = {"attention_mask": m,
                      "position_ids": (m.cumsum(-1) - 1).clamp_min(0)} if (m == 0).any() else {}
                lm.hf(input_ids=x, use_cache=False, **kw)
    return run


def throughput(lm, n_tokens: int, reps: int, batch: int = 16) -> Case:
    from neurolens.engine.neuron_index import build_index
    from neurolens.engine.neuron_index.build import seq_len_for
    tmp = Path(tempfile.mkdtemp(prefix="nl-index-bench-"))
    try:
        corpus = tmp / "corpus.jsonl"
        n_docs = write_corpus(corpus, lm.tokenizer, n_tokens)
        seq_len = seq_len_for(lm)
        out = tmp / "ix"
        got = {}

        def ours():
            shutil.rmtree(out, ignore_errors=True)
            got["idx"] = build_index(lm, corpus, out, sites=SITES, chunk_docs=512,
                                     batch_size=batch, seq_len=seq_len)

        t_ours, t_plain = alternate(ours, _plain(lm, corpus, seq_len, batch), reps)
        idx = got["idx"]
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = t_plain / t_ours
    return Case(f"neuron index build ({idx.n_tokens} tokens, {n_docs} docs, all hook_post, "
                "top 20): throughput / plain forwards", t_ours, t_plain, r, ">= 0.8",
                check(r, ">= 0.8"),
                detail={"index_tokens_per_s": round(idx.n_tokens / t_ours),
                        "plain_tokens_per_s": round(idx.n_tokens / t_plain),
                        "index_MB": round(size / 1e6, 2),
                        "note": "the index stops each forward after its last site (no LM "
                                "head), as capture does; the reference runs the full model"})


def memory(n_tokens: int, model: str | None = None) -> Case:
    """Resident memory of a build in a fresh process: its growth from the end of the first
    chunk to the end of the build (flat: the statistics do not grow with the corpus)."""
    with tempfile.TemporaryDirectory(prefix="nl-index-mem-") as tmp:
        d = fresh_process(__name__, [n_tokens, tmp, model or ""], timeout=7200)
    growth = d["rss_end_mb"] - d["rss_first_chunk_mb"]
    return Case(f"neuron index build memory ({d['tokens']} tokens, {d['chunks']} chunks): "
                "resident growth after the first chunk", growth, None, growth, "<= 50",
                check(growth, "<= 50"), unit="MB",
                detail={"rss_by_chunk_mb": d["rss_by_chunk_mb"], "seconds": d["seconds"],
                        "tokens_per_s": round(d["tokens"] / d["seconds"]),
                        "index_MB": d["index_mb"]})


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main(argv: list[str]) -> None:
    import time

    from neurolens.engine.loading import load
    from neurolens.engine.neuron_index import build_index
    n_tokens, tmp = int(argv[0]), Path(argv[1])
    lm = load((argv[2] if len(argv) > 2 else "") or None)
    corpus = tmp / "corpus.jsonl"
    write_corpus(corpus, lm.tokenizer, n_tokens)
    chunk = 512
    rss: list[float] = []
    last = [0]

    def progress(done, total):
        if done >= last[0] + chunk or done == total:   # after each chunk's file is written
            last[0] = done
            rss.append(round(_rss_mb(), 1))
    t = time.perf_counter()
    idx = build_index(lm, corpus, tmp / "ix", sites=SITES, chunk_docs=chunk, batch_size=16,
                      progress=progress)
    dt = time.perf_counter() - t
    size = sum(p.stat().st_size for p in (tmp / "ix").rglob("*") if p.is_file())
    print(json.dumps({"tokens": idx.n_tokens, "seconds": round(dt, 1), "chunks": len(rss),
                      "rss_first_chunk_mb": rss[0], "rss_end_mb": rss[-1],
                      "rss_by_chunk_mb": rss, "index_mb": round(size / 1e6, 2)}))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
