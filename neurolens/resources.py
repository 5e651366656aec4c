"""Locate shipped resources (demo models, prompt sets, icons).

Installed wheels carry the repository's top-level ``resources/`` folder as the package
``neurolens._resources`` (see pyproject.toml); a source checkout uses the folder directly.
"""

from __future__ import annotations

from importlib import resources as _ir
from pathlib import Path

DEMO_LM = "demo-lm"
DEMO_DIFFUSION = "demo-diffusion"


def resources_dir() -> Path:
    import sys
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):  # PyInstaller bundle
        return Path(sys._MEIPASS) / "resources"
    try:
        p = Path(str(_ir.files("neurolens._resources")))
        if (p / "models").is_dir() or (p / "prompts").is_dir():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "resources"


def model_path(name: str = DEMO_LM) -> Path:
    return resources_dir() / "models" / name


def prompts_dir() -> Path:
    return resources_dir() / "prompts"
