"""Train the neurolens demo spiking networks (learned delays, fixed random delays, no delays) on
the synthetic temporal-motif task of METHODS.md section 6, offline, on the CPU.

    python training/train_snn.py --out resources/models          # 3 variants x 3 seeds

(or ``python -m training.train_snn`` from the repository root; not part of the installed
package.) Every run is seeded (templates, initialisation, fresh training samples per epoch,
dropout); the three variants get the same budget (epochs, samples, batch). Writes, under
``--out``: ``demo-snn`` (learned delays, seed 0) with the sample sets (``samples/probe`` and
``samples/heldout``, safetensors) and ``training.json`` (arguments, time, every run's held-out
accuracy, the targets); ``demo-snn-fixed`` and ``demo-snn-nodelay`` (seed 0); and every run in
``demo-snn-runs/{variant}-s{seed}``. ``--tiny`` trains a very small configuration for a few
steps (the test suite keeps the script working with it).

The recipe (METHODS.md): Adam on the weights (one-cycle from 1e-3 to 5e-3, weight decay 1e-5,
none on batch norm), Adam on the delays with a 100x larger rate (cosine), the Gaussian width
sigma decaying geometrically from K/2 to 0.5 bins over the first quarter of the steps, then held;
evaluation with delays rounded to whole bins. Batch 128, 40 epochs of 4,096 fresh samples, a
fixed held-out set of 2,048; 12 -> 48 -> 8 (K = 37), the same budget for every variant.

One addition (``--round-frac 0.25``, for every variant alike): the last quarter of the steps
trains the weights with the delays rounded to whole bins and frozen (one-hot kernels, as they are
evaluated). On this task the task's +-1-bin jitter draws learned delays to half bins, where a
sigma = 0.5 Gaussian splits a synapse over two taps; rounding them then cost 0.2-0.5 of held-out
accuracy (e.g. 0.84 with the Gaussian kernels, 0.47 rounded, 16 hidden neurons), and the
rounded phase recovers it (0.96 with 48 hidden neurons). The fixed and no-delay variants are
unaffected by it (their kernels are one-hot throughout). Hidden size 48 (METHODS.md: 64, which
may be tuned): with 64, fixed random delays came within 0.08 of learned ones and a run took
twice as long.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):     # run as a script: the checkout's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from neurolens.engine.snn.data import save_samples  # noqa: E402
from neurolens.engine.snn.network import (SNNConfig, SpikingNet, class_scores,  # noqa: E402
                                          save_network)
from neurolens.evals import spike_motifs as sm  # noqa: E402

VARIANTS = ("learned", "fixed", "none")
FOLDER = {"learned": "demo-snn", "fixed": "demo-snn-fixed", "none": "demo-snn-nodelay"}
TARGETS = {"learned_min": 0.90, "none_max": 0.35, "fixed_over_none": 0.10,
           "fixed_under_learned": 0.05}


def sigma_at(step: int, total: int, k: int, end: float = 0.5, frac: float = 0.25) -> float:
    """Geometric decay from K/2 to ``end`` over the first ``frac`` of the steps, then held."""
    n = max(1, int(total * frac))
    if step >= n:
        return end
    start = k / 2
    return float(start * (end / start) ** (step / n))


@torch.no_grad()
def accuracy(net: SpikingNet, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    net.eval()
    hits = 0
    for a in range(0, len(x), batch):
        xb = torch.from_numpy(x[a:a + batch]).float()
        hits += int((class_scores(net(xb)).argmax(1).numpy() == y[a:a + batch]).sum())
    return hits / len(x)


def train_one(variant: str, seed: int, args, task: sm.MotifTask, heldout) -> tuple:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = SNNConfig(n_in=task.channels, layer_sizes=[args.hidden, task.classes],
                    kernel_size=args.kernel, delays=variant, tau=args.tau,
                    dropout=args.dropout, class_names=sm.class_names(task),
                    task=task.to_json())
    net = SpikingNet(cfg)
    net.init_delays(gen)
    per_epoch = args.samples // args.batch
    total = per_epoch * args.epochs
    bn = [p for n, p in net.named_parameters() if ".bn." in n]
    weights = [p for n, p in net.named_parameters() if n.endswith("proj.weight")]
    delays = [p for n, p in net.named_parameters() if n.endswith("proj.delay")]
    opt_w = torch.optim.Adam([{"params": weights, "weight_decay": args.wd},
                              {"params": bn, "weight_decay": 0.0}], lr=args.lr)
    sched_w = torch.optim.lr_scheduler.OneCycleLR(opt_w, max_lr=args.max_lr, total_steps=total,
                                                  div_factor=args.max_lr / args.lr)
    opt_d = sched_d = None
    if delays:
        opt_d = torch.optim.Adam(delays, lr=args.lr * args.delay_lr_factor)
        sched_d = torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, T_max=total)
    history = []
    step = 0
    round_at = total - int(round(total * args.round_frac))
    rounded = False
    t0 = time.time()
    for epoch in range(args.epochs):
        x, y = task.sample(per_epoch * args.batch, seed=10_000 * (seed + 1) + epoch)
        net.train()
        losses = []
        for b in range(per_epoch):
            if step >= round_at:      # the last steps: whole-bin delays (as evaluated), frozen
                if not rounded:
                    net.round_delays()
                    rounded = True
                net.set_sigma(0.0)
            else:
                net.set_sigma(sigma_at(step, total, args.kernel, args.sigma_end))
            xb = torch.from_numpy(x[b * args.batch:(b + 1) * args.batch]).float()
            yb = torch.from_numpy(y[b * args.batch:(b + 1) * args.batch])
            loss = F.cross_entropy(class_scores(net(xb)), yb)
            opt_w.zero_grad()
            if opt_d is not None:
                opt_d.zero_grad()
            loss.backward()
            opt_w.step()
            sched_w.step()
            if opt_d is not None and not rounded:
                opt_d.step()
                sched_d.step()
                for p in net.projections():
                    p.clamp_delays()
            losses.append(float(loss.detach()))
            step += 1
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            acc = accuracy(net, *heldout)
            history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
                            "heldout": round(acc, 4), "sigma": round(net.layers[0].proj.sigma, 3),
                            "seconds": round(time.time() - t0, 1)})
            print(f"  {variant} s{seed} epoch {epoch + 1}: loss {np.mean(losses):.3f} "
                  f"held-out {acc:.3f} ({time.time() - t0:.0f}s)", flush=True)
    net.round_delays()
    acc = accuracy(net, *heldout)
    return net, {"variant": variant, "seed": seed, "heldout": round(acc, 4),
                 "seconds": round(time.time() - t0, 1), "history": history}


def _run(job) -> dict:
    """Train one (variant, seed), save it in ``demo-snn-runs/{variant}-s{seed}``; the run's
    record (a worker process's entry point)."""
    variant, seed, args = job
    torch.set_num_threads(args.threads)
    task = sm.DEMO_TASK
    heldout = task.sample(128 if args.tiny else sm.HELDOUT_SIZE, seed=sm.HELDOUT_SEED)
    net, info = train_one(variant, seed, args, task, heldout)
    save_network(net, args.out / "demo-snn-runs" / f"{variant}-s{seed}")
    print(f"{variant} seed {seed}: held-out {info['heldout']:.4f} ({info['seconds']:.0f}s)",
          flush=True)
    return info


def summary(runs: list[dict]) -> dict:
    mean = {v: float(np.mean([r["heldout"] for r in runs if r["variant"] == v]))
            for v in VARIANTS if any(r["variant"] == v for r in runs)}
    ok = None
    if len(mean) == 3:
        ok = (mean["learned"] >= TARGETS["learned_min"] and mean["none"] <= TARGETS["none_max"]
              and mean["fixed"] >= mean["none"] + TARGETS["fixed_over_none"]
              and mean["fixed"] <= mean["learned"] - TARGETS["fixed_under_learned"])
    return {"mean_heldout": {k: round(v, 4) for k, v in mean.items()}, "meets_targets": ok}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("resources/models"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4096, help="fresh training samples per epoch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--kernel", type=int, default=37, help="taps K (max delay K - 1 bins)")
    ap.add_argument("--tau", type=float, default=1.005)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-lr", type=float, default=5e-3)
    ap.add_argument("--wd", type=float, default=1e-5)
    ap.add_argument("--delay-lr-factor", type=float, default=100.0)
    ap.add_argument("--sigma-end", type=float, default=0.5)
    ap.add_argument("--round-frac", type=float, default=0.25,
                    help="train the last fraction of the steps with whole-bin delays (frozen)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--jobs", type=int, default=2, help="trainings in parallel (processes)")
    ap.add_argument("--runs-only", action="store_true",
                    help="write only demo-snn-runs/ (not the shipped folders)")
    ap.add_argument("--tiny", action="store_true", help="a few steps of a tiny configuration")
    args = ap.parse_args(argv)
    if args.tiny:
        args.epochs, args.samples, args.batch, args.hidden, args.kernel = 2, 64, 32, 8, 9
        args.eval_every = 1
    torch.set_num_threads(args.threads)
    task = sm.DEMO_TASK
    n_held = 128 if args.tiny else sm.HELDOUT_SIZE
    heldout = task.sample(n_held, seed=sm.HELDOUT_SEED)
    probe = task.sample(64 if args.tiny else sm.PROBE_SIZE, seed=sm.PROBE_SEED)
    t_all = time.time()
    jobs = [(v, seed, args) for seed in args.seeds for v in args.variants]
    if args.jobs > 1 and len(jobs) > 1:      # one training per process, one thread each
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_run, jobs))
    else:
        runs = [_run(job) for job in jobs]
    seconds = time.time() - t_all
    summ = summary(runs)
    info = {"task": task.to_json(), "splits": {"probe": {"seed": sm.PROBE_SEED, "n": len(probe[1])},
                                                "heldout": {"seed": sm.HELDOUT_SEED,
                                                            "n": len(heldout[1])}},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__, "threads": args.threads, "jobs": args.jobs,
            "cpus": os.cpu_count(),
            "train_seconds_total": round(seconds, 1), "targets": TARGETS, **summ,
            "runs": [{k: r[k] for k in ("variant", "seed", "heldout", "seconds")} for r in runs],
            "history": {f"{r['variant']}-s{r['seed']}": r["history"] for r in runs}}
    print(json.dumps({k: info[k] for k in ("mean_heldout", "meets_targets",
                                           "train_seconds_total")}), flush=True)
    if not args.runs_only:
        seed0 = args.seeds[0]
        for v in args.variants:
            dst = args.out / FOLDER[v]
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(args.out / "demo-snn-runs" / f"{v}-s{seed0}", dst)
            run = next(r for r in runs if r["variant"] == v and r["seed"] == seed0)
            (dst / "training.json").write_text(json.dumps(
                {"variant": v, "seed": seed0, "heldout": run["heldout"],
                 "all_runs": "../demo-snn/training.json"}, indent=2) + "\n")
        main_dir = args.out / FOLDER["learned"]
        if main_dir.is_dir():
            save_samples(main_dir / "samples" / "probe.safetensors", *probe,
                         metadata={"split": "probe", "seed": str(sm.PROBE_SEED)})
            save_samples(main_dir / "samples" / "heldout.safetensors", *heldout,
                         metadata={"split": "heldout", "seed": str(sm.HELDOUT_SEED)})
            (main_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    else:
        (args.out / "demo-snn-runs").mkdir(parents=True, exist_ok=True)
        (args.out / "demo-snn-runs" / "training.json").write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
