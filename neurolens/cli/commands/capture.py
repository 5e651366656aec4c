"""``neurolens capture``: record activations to a safetensors file (one tensor per
(site, prompt) named ``{site}/{prompt_index}``; the engine's ``Capture`` writes it)."""

from __future__ import annotations

from pathlib import Path

from neurolens.cli.args import model_args, prompt_args, sample_args
from neurolens.cli.common import early_prompts, load_edits, load_model, model_inputs
from neurolens.cli.families import adapter_for
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
    payload, text = adapter_for(model).capture(args, model, prompts, sites, edits, out)
    emit(args, payload, text)
    return 0
