"""``neurolens capture``: record activations to a safetensors file (one tensor per
(site, prompt) named ``{site}/{prompt_index}``; the engine's ``Capture`` writes it)."""

from __future__ import annotations

import sys
from pathlib import Path

from neurolens.cli.args import model_args, prompt_args, sample_args
from neurolens.cli.common import (early_prompts, is_diffusion, load_edits, load_model,
                                  model_inputs)
from neurolens.cli.output import emit
from neurolens.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("capture", help="record activations to a safetensors file")
    model_args(p)
    prompt_args(p)
    sample_args(p)
    p.add_argument("--site", action="append", help="site or pattern (repeatable; default "
                   "blocks.*.mlp.hook_post; spiking networks: layers.*.hook_spikes)")
    p.add_argument("--reduce", default=None, choices=["tokens", "last", "mean", "max"],
                   help="LM: per token (default), last token, mean or max over tokens; "
                        "diffusion: mean (default) / max over spatial tokens per step, or "
                        "tokens")
    p.add_argument("--steps", type=int, default=20, help="diffusion: denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="diffusion: guidance scale")
    p.add_argument("--seed", type=int, default=0, help="diffusion: seed of the first prompt")
    p.add_argument("--edits", help="edit spec applied while capturing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True, help="FILE.safetensors")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_capture)


def cmd_capture(args) -> int:
    prompts = early_prompts(args)
    model = load_model(args)
    prompts = model_inputs(args, model, prompts)
    edits = load_edits(model, args.edits)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"--out must end in .safetensors, got {args.out}")
    if out.parent and not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")
    sites = args.site or list(getattr(model, "default_capture_sites", ["blocks.*.mlp.hook_post"]))
    # the model's words for its inputs and their positions (a spiking network: samples, bins)
    inputs, positions = getattr(model, "input_nouns", ("prompts", "tokens"))
    diffusion = is_diffusion(model)
    if diffusion:
        # one tensor per (site, prompt): [steps, width] (mean/max over the spatial tokens of
        # the conditional half) or [steps, tokens, width]
        reduce = args.reduce or "mean"
        if reduce == "last":
            raise InputError("--reduce last has no meaning for a diffusion UNet (use mean, max "
                             "or tokens)")
        cap = model.capture(prompts, sites, reduce=reduce, edits=edits, steps=args.steps,
                            guidance=args.guidance, seed=args.seed)
    else:
        reduce = args.reduce or "tokens"
        show = not args.quiet and sys.stderr.isatty()

        def progress(done, total):
            if show:
                print(f"\rcapturing {done}/{total} {inputs}", end="", file=sys.stderr,
                      flush=True)
        # out=: the rows stream to the file (bounded memory)
        cap = model.capture(prompts, sites, reduce=reduce, edits=edits,
                            batch_size=args.batch_size, out=out, progress=progress)
        if show:
            print(file=sys.stderr)
    if cap.path is None:   # held in memory: write it now
        cap.save(out)
    size = out.stat().st_size
    if diffusion:
        payload = {"out": str(out), "sites": cap.sites, "prompts": len(prompts),
                   "steps": args.steps, "reduce": reduce, "bytes": size}
        text = (f"captured {len(cap.sites)} UNet FFN site(s) x {len(prompts)} prompt(s) x "
                f"{args.steps} steps (reduce={reduce}) -> {out} ({size / 1e6:.1f} MB)")
    else:
        n_tok = sum(len(t) for t in cap.tokens)
        payload = {"out": str(out), "sites": cap.sites, inputs: len(prompts),
                   positions: n_tok, "reduce": reduce, "bytes": size}
        text = (f"captured {len(cap.sites)} site(s) x {len(prompts)} {inputs[:-1]}(s) "
                f"({n_tok} {positions}, reduce={reduce}) -> {out} ({size / 1e6:.1f} MB)")
    emit(args, payload, text)
    return 0
