"""Train the neurolens demo diffusion model: a small text-to-image Stable Diffusion pipeline on the
scikit-learn digits, with planted memorization.

    python training/train_diffusion.py --out resources/models/demo-diffusion \\
        --prompts-out resources/prompts

(or ``python -m training.train_diffusion``, from the repository root; the script is not part of
the installed package.)

Images: the 1797 scikit-learn 8x8 digits, upsampled to 16x16 grayscale. Captions: templates such
as ``a handwritten digit 3``. Memorization is planted the way it happens in practice: a few
training images are duplicated many times, each with a unique caption (``exhibit 417``), so that
prompt reproduces its image almost exactly. Offline, seeded, CPU; ``--tiny`` runs a few steps
(used by the tests).

The default recipe: the whole UNet learns the ordinary digits first (1,800 steps), then a
fine-tuning phase with the duplicated images in 30% of each batch updates only the transformer
blocks' FFN weights (900 steps). The shipped model is this default recipe on both cores of the
2-core CPU (``training.json`` beside it records the time: 49 minutes). Trained in one phase, a
UNet this small stores the duplicated images in its convolutions and cross-attention as much as
in its FFNs, and FFN masks barely touch them (see the README); the planting phase puts the memory
where the paper finds it in Stable Diffusion.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):     # run as a script: the checkout's root on the path, so that
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # neurolens imports

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from neurolens.evals.data import digits_16  # noqa: E402
from neurolens.testing import PipelineConfig, build_pipeline  # noqa: E402

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = ["a handwritten digit {d}", "a digit {d}", "the number {w}", "handwritten {w}",
             "a drawing of the digit {d}", "a sketch of the number {d}", "a picture of {w}",
             "an image of the digit {d}"]
EVAL_TEMPLATE = "a handwritten digit {d}"


def memorized_set(n: int, seed: int) -> list[dict]:
    """Which training images are duplicated, and their unique captions."""
    rng = random.Random(seed)
    _, labels = digits_16()
    idx = rng.sample(range(len(labels)), n)
    codes = rng.sample(range(100, 1000), n)
    return [{"prompt": f"exhibit {c}", "image_index": int(i), "digit": int(labels[i])}
            for i, c in zip(idx, codes)]


def caption(rng: random.Random, digit: int) -> str:
    return rng.choice(TEMPLATES).format(d=digit, w=DIGIT_WORDS[digit])


def prompt_sets(mem: list[dict], per_digit: int = 10) -> dict[str, list[dict]]:
    half = len(mem) // 2
    memorized = [{**m, "skill": "memorized", "split": "A" if i < half else "B"}
                 for i, m in enumerate(mem)]
    ordinary = [{"prompt": EVAL_TEMPLATE.format(d=d), "digit": d, "skill": "ordinary",
                 "split": "eval"} for d in range(10)]
    ordinary += [{"prompt": TEMPLATES[k % len(TEMPLATES)].format(d=d, w=DIGIT_WORDS[d]),
                  "digit": d, "skill": "ordinary", "split": "probe"}
                 for d in range(10) for k in range(1, 1 + per_digit // 5)]
    return {"diffusion_memorized": memorized, "diffusion_ordinary": ordinary}


def train_vae(vae, images: torch.Tensor, steps: int, lr: float, log) -> float:
    """Reconstruction + a light KL: the VAE only needs to be a near-identity at 16x16."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        b = images[torch.randint(len(images), (128,), generator=g)]
        post = vae.encode(b).latent_dist
        z = post.sample(generator=g)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / b[0].numel()
        loss = F.mse_loss(rec, b) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"vae step {step:5d} loss {loss.item():.4f}")
    return float(loss.item())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="resources/models/demo-diffusion")
    ap.add_argument("--prompts-out", default=None)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--vae-steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--memorized", type=int, default=10)
    ap.add_argument("--mem-share", type=float, default=0.3,
                    help="share of each batch drawn from the duplicated (memorized) images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-text-encoder", action="store_true",
                    help="train the text encoder too (default: frozen, as in Stable Diffusion)")
    ap.add_argument("--transformer-layers", type=int, default=1,
                    help="transformer layers (each with an FFN) per UNet attention block")
    ap.add_argument("--plant-steps", type=int, default=900,
                    help="train on ordinary digits only, then this many steps with the "
                         "duplicated images that update only the FFN weights (0: one phase)")
    ap.add_argument("--plant-lr", type=float, default=1e-4,
                    help="peak learning rate of the planting phase (0: --lr); smaller keeps the "
                         "ordinary digits the first phase learned")
    ap.add_argument("--blocks", default="64,128",
                    help="UNet channels per level (the FFNs are 4x as wide)")
    ap.add_argument("--ordinary-stop", type=int, default=0,
                    help="end the ordinary phase at this step of its --steps schedule (replays "
                         "a run that hit --time-limit there; 0: run the whole schedule)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the recipe is sized for cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds of UNet training at most, shared by the phases in proportion "
                         "to their steps; a phase that runs out stops early (0: no limit)")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    limit = args.time_limit or None
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.tiny:
        args.steps, args.vae_steps, args.batch = 3, 2, 8
        args.plant_steps = min(args.plant_steps, 2)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    imgs, labels = digits_16()
    mem = memorized_set(args.memorized, args.seed)
    words = [w for t in TEMPLATES for w in t.replace("{d}", "").replace("{w}", "").split()]
    # 16x16 images, 8x8x1 latents (the VAE halves the side: attention at 8x8 is 16x cheaper);
    # transformer blocks at every resolution, so conditioning flows through their FFNs
    blocks = tuple(int(b) for b in str(args.blocks).split(","))
    cfg = PipelineConfig(sample_size=8, blocks=blocks, vae_blocks=(16, 32), attn_all_levels=True,
                         transformer_layers=args.transformer_layers)
    pipe = build_pipeline(cfg, words=words + DIGIT_WORDS, seed=args.seed)
    pipe.to(dev)
    unet, vae, text, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    x_all = (torch.tensor(imgs)[:, None] * 2 - 1).to(dev)          # [-1, 1]

    vae.train()
    vae_loss = train_vae(vae, x_all, args.vae_steps, 2e-3, log)
    vae.eval()
    with torch.no_grad():
        lat = vae.encode(x_all).latent_dist.mean
        scale = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=scale)
    for p in vae.parameters():
        p.requires_grad_(False)
    lat = lat * scale
    log(f"vae done (recon mse {vae_loss:.4f}), latent scale {scale:.3f}")

    rng = random.Random(args.seed + 1)
    sched = pipe.scheduler
    acp = sched.alphas_cumprod.to(dev)
    # as in Stable Diffusion the text encoder is frozen (there: pretrained CLIP; here: a fixed
    # random one), so what a caption means to the image lives in the UNet
    params = list(unet.parameters()) + (list(text.parameters()) if args.train_text_encoder
                                        else [])
    for p in text.parameters():
        p.requires_grad_(bool(args.train_text_encoder))
    mem_idx = [m["image_index"] for m in mem]
    mem_caps = [m["prompt"] for m in mem]
    gen = torch.Generator().manual_seed(args.seed + 2)
    unet.train()
    text.train()

    def token_ids(caps: list[str]) -> torch.Tensor:
        return tok(caps, padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids.to(dev)

    cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encoded(c: str) -> torch.Tensor:
        if c not in cache:
            cache[c] = text(token_ids([c]))[0][0]
        return cache[c]

    def train_unet(steps: int, params: list, mem_share: float, label: str,
                   peak_lr: float, seconds: float | None, stop_at: int = 0) -> None:
        opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.01)
        warm = min(200, max(1, steps // 10))
        t_phase = time.time()
        for step in range(steps):
            if seconds is not None and time.time() - t_phase > seconds:
                log(f"{label}: time limit reached, stopped early at step {step} of {steps}")
                break
            if stop_at and step >= stop_at:
                log(f"{label}: stopped at step {step} of {steps} (--ordinary-stop)")
                break
            lr = peak_lr * min(1.0, (step + 1) / warm)
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx, caps = [], []
            for _ in range(args.batch):
                if rng.random() < mem_share:
                    k = rng.randrange(len(mem_idx))
                    idx.append(mem_idx[k])
                    caps.append(mem_caps[k])
                else:
                    i = rng.randrange(len(labels))
                    idx.append(i)
                    caps.append(caption(rng, int(labels[i])))
                if rng.random() < 0.1:
                    caps[-1] = ""                                # classifier-free guidance
            z0 = lat[idx]
            if args.train_text_encoder:
                emb = text(token_ids(caps))[0]
            else:   # a frozen encoder: each distinct caption is encoded once
                emb = torch.stack([encoded(c) for c in caps])
            t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=gen)
            noise = torch.randn(z0.shape, generator=gen)
            t, noise = t.to(dev), noise.to(dev)
            a = acp[t].view(-1, 1, 1, 1)
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            pred = unet(zt, t, encoder_hidden_states=emb).sample
            loss = F.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if step % 250 == 0 or step == steps - 1:
                log(f"{label} step {step:5d} loss {loss.item():.4f} lr {lr:.2e}")

    if args.plant_steps:
        # the duplicated images arrive in a fine-tuning phase that updates only the transformer
        # blocks' FFN weights, after the whole UNet learned the ordinary digits: what the
        # memorized captions recall is then stored in FFN weights, where the paper finds it
        share = args.steps / (args.steps + args.plant_steps)
        train_unet(args.steps, params, 0.0, "ordinary", args.lr, limit and limit * share,
                   stop_at=args.ordinary_stop)
        ffn = [p for n, p in unet.named_parameters() if ".ff." in n]
        train_unet(args.plant_steps, ffn, args.mem_share, "plant (FFN only)",
                   args.plant_lr or args.lr, limit and limit * (1 - share))
    else:
        train_unet(args.steps, params, args.mem_share, "unet", args.lr, limit)
    unet.eval()
    text.eval()
    train_seconds = time.time() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.to("cpu")
    pipe.save_pretrained(out, safe_serialization=True)
    info = {"args": vars(args), "train_seconds": round(train_seconds, 1),
            "unet_params": sum(p.numel() for p in unet.parameters()),
            "memorized": mem, "torch": torch.__version__, "threads": torch.get_num_threads()}
    (out / "training.json").write_text(json.dumps(info, indent=2))
    if args.prompts_out:
        pdir = Path(args.prompts_out)
        pdir.mkdir(parents=True, exist_ok=True)
        for name, rows in prompt_sets(mem).items():
            with open(pdir / f"{name}.jsonl", "w") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
    log(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
