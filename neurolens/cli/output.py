"""What the commands print and write besides the engine's own files: text or JSON on stdout,
progress and log lines on stderr, image grids as PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from neurolens.errors import InputError


def emit(args, payload, text: str) -> None:
    """``payload`` as JSON with ``--json``, else ``text``."""
    if getattr(args, "json", False):
        print_json(payload)
    else:
        print(text)


def render(args, result, payload: dict | None = None) -> None:
    """A result that renders itself: ``result.to_json()`` (or ``payload``) with ``--json``,
    else ``result.summary()``."""
    emit(args, result.to_json() if payload is None else payload, result.summary())


def print_json(payload) -> None:
    print(json.dumps(payload, indent=2))


def stderr_log(quiet: bool):
    """A ``log(message)`` for the long commands: stderr, or nothing with ``--quiet``."""
    return (lambda m: print(m, file=sys.stderr)) if not quiet else (lambda m: None)


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        w = 30
        k = int(w * done / max(total, 1))
        print(f"\r{label:14s} [{'#' * k}{'.' * (w - k)}] {done}/{total}", end="",
              file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)


def save_grid(rows: list, path: str) -> str:
    """Save image rows (each a list of [H, W, C] arrays in 0..1) as one PNG grid."""
    from PIL import Image

    from neurolens.engine.diffusion import image_grid

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError(f"--image must end in .png, got {path}")
    if p.parent and not p.parent.exists():
        raise InputError(f"folder {p.parent} does not exist")
    h, w = rows[0][0].shape[:2]
    grid = image_grid(rows)
    scale = max(1, 256 // max(h, w))
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(p)
    return str(p)
