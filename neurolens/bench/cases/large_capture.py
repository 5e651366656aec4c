"""Large capture to disk: stream a capture of the demo model to a file; the growth of the
resident memory over the size after loading, measured in a fresh process.

``case`` (in the bench process) runs ``python -m neurolens.bench.cases.large_capture N_TOKENS
OUT [MODEL]``, whose ``main`` (in the fresh process) captures and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

from neurolens.bench.measure import Case, check, fresh_process


def case(n_tokens: int, tmpdir: str, model: str | None = None) -> Case:
    """Stream a large capture of the demo model to disk; peak resident memory growth."""
    out = os.path.join(tmpdir, "large.safetensors")
    d = fresh_process(__name__, [n_tokens, out, model or ""], timeout=3600)
    # resident memory sampled after every batch, against the resident size after loading
    growth = d["peak_mb"] - d["base_mb"]
    size = os.path.getsize(out) / 1e6
    os.unlink(out)
    return Case(f"large capture to disk ({d['tokens']} tokens, demo model, all hook_post)",
                growth, None, growth, "<= 300", check(growth, "<= 300"), unit="MB",
                detail={"tokens_per_s": round(d["tokens"] / d["seconds"]),
                        "file_MB": round(size), "seconds": round(d["seconds"], 1)})


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main(argv: list[str]) -> None:
    """The fresh process: load, capture ``n_tokens`` random tokens to ``out``, print JSON."""
    import resource
    import time

    import torch

    from neurolens.engine.loading import load
    n_tokens, out = int(argv[0]), argv[1]
    lm = load((argv[2] if len(argv) > 2 else "") or None)
    base = _rss_mb()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    seq = 128
    rows = torch.randint(1, lm.hf.config.vocab_size, (n_tokens // seq, seq),
                         generator=torch.Generator().manual_seed(0)).tolist()
    peak = [base]

    def progress(done, total):
        peak[0] = max(peak[0], _rss_mb())
    t = time.perf_counter()
    lm.capture(rows, ["blocks.*.mlp.hook_post"], batch_size=16, out=out, progress=progress)
    dt = time.perf_counter() - t
    peak[0] = max(peak[0], _rss_mb())
    print(json.dumps({"seconds": dt, "base_mb": base, "peak_mb": peak[0],
                      "maxrss_before_mb": peak0,
                      "maxrss_after_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
                      "tokens": len(rows) * seq}))


if __name__ == "__main__":
    main(sys.argv[1:])
