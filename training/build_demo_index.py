"""Build the neuron index shipped beside the demo language model (issue 27, item 2).

    python training/build_demo_index.py            # -> resources/models/demo-lm/index/

(or ``python -m training.build_demo_index``, from the repository root.)

The corpus is ours and offline: every prompt of the shipped prompt sets of the demo skills with
its answer (arithmetic, comprehension, refusal, benign, code), then a seeded sample of the demo
model's training stream (``TrainingStream``, the recipe's mixture: programs for code, conjunctive
secret requests), in a seeded random order (the first chunk fixes the histograms' bins, so it
should see every skill). It is written to ``index/corpus.jsonl`` beside the index (one JSON
object with
a ``"text"`` field per document), because the dashboards read their context windows back from
it and the stream's code documents come from the running interpreter's standard library, which
differs between Python versions. The index covers every ``hook_post`` site (4 x 768 neurons),
top 20 examples per neuron, 32 bins. ``find_index`` finds it for the shipped weights (its
digest), and the GUI opens the demo model with it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):     # run as a script: the checkout's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SKILLS = ("arithmetic", "comprehension", "refusal", "benign", "code")


def corpus_docs(stream_docs: int, seed: int) -> list[str]:
    """The prompt sets' items (prompt + answer), then ``stream_docs`` training-stream docs."""
    from neurolens.evals.corpus import Mixture, TrainingStream
    from neurolens.resources import prompts_dir
    docs = []
    for skill in SKILLS:
        for line in (prompts_dir() / f"{skill}.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                docs.append(row["prompt"] + row.get("answer", ""))
    # the demo recipe's mixture (training/train_lm.py: --code programs, conjunctive requests)
    mix = Mixture(arithmetic=0.28, comprehension=0.35, refusal=0.16, code=0.0, prose=0.08,
                  programs=0.13)
    stream = TrainingStream(seed=seed, mixture=mix, requests="conjunctive")
    docs += [stream.document(600) for _ in range(stream_docs)]
    # seeded shuffle: the first chunk, which fixes the histograms' bins, sees every skill
    random.Random(seed).shuffle(docs)
    return docs


def main(argv=None) -> int:
    from neurolens.resources import model_path
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(model_path()))
    ap.add_argument("--out", default=None, help="default: <model>/index")
    ap.add_argument("--stream-docs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from neurolens.engine.loading import load
    from neurolens.engine.neuron_index import build_index
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(args.model) / "index"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    corpus = out / "corpus.jsonl"
    with open(corpus, "w") as f:
        for d in corpus_docs(args.stream_docs, args.seed):
            f.write(json.dumps({"text": d}) + "\n")
    model = load(args.model)
    t = time.perf_counter()
    idx = build_index(model, corpus, out, sites=["blocks.*.mlp.hook_post"], top_k=20,
                      chunk_docs=1024, batch_size=32,
                      progress=lambda d, n: print(f"\r{d}/{n} documents", end="", flush=True))
    dt = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"\n{idx.summary()}\n{dt:.1f} s, {idx.n_tokens / dt:.0f} tokens/s, "
          f"{size / 1e6:.2f} MB on disk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
