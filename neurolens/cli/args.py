"""Flag groups the commands share (model loading, prompts, generation/denoising)."""

from __future__ import annotations

import argparse


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None,
                   help="model folder or hub id (default: the shipped demo model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--max-memory", default=None, metavar="DEVICE=SIZE,...",
                   help="with --device auto: the most each device may hold, e.g. "
                        "cpu=16GiB or 0=20GiB,cpu=16GiB (the rest goes to disk)")
    p.add_argument("--dtype", default=None, help="float32, float16, bfloat16 or auto")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle weights (.bin/.pt); they can run code")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run model code shipped with the checkpoint")
    debug_arg(p, help="show tracebacks")


def debug_arg(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--debug`` after the command too (SUPPRESS: it does not override one given before)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=help)


def prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", help="prompt text (\\n for a newline)")
    p.add_argument("--prompts", help="file: text lines or JSONL with a 'prompt' field")


def sample_args(p: argparse.ArgumentParser, limit: bool = True) -> None:
    p.add_argument("--samples", help="spiking networks: sample file (SHD .h5/.hdf5, or "
                   "safetensors with spikes [samples, time, channels] and labels)")
    if limit:
        p.add_argument("--limit", type=int, default=None,
                       help="spiking networks: the first N samples only")


def gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--stop", action="append", help="stop text (repeatable), e.g. '\\n'")
    p.add_argument("--steps", type=int, default=20, help="diffusion: denoising steps")
    p.add_argument("--guidance", type=float, default=3.0,
                   help="diffusion: classifier-free guidance scale")
    p.add_argument("--image", default="neurolens_images.png",
                   help="diffusion: where to save the image grid (PNG)")
