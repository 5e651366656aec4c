"""JSON + safetensors-sidecar files, written atomically (edit specs and sessions share this)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from neurolens.errors import SpecError


def save_json_with_sidecar(path: Path, data: dict, arrays: dict[str, np.ndarray],
                           sidecar: Path) -> Path:
    """Write ``data`` as JSON; when ``arrays`` is non-empty also write them to ``sidecar`` and
    record its name under ``data["sidecar"]``. Both writes are atomic (temp file + rename)."""
    from safetensors.numpy import save_file
    if arrays:
        data["sidecar"] = sidecar.name
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        os.replace(tmp, sidecar)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_json_with_sidecar(path: Path, what: str = "file") -> tuple[Any, dict[str, np.ndarray]]:
    """Read JSON and, when it names one, its safetensors sidecar. Errors are SpecErrors."""
    from safetensors.numpy import load_file
    if not path.is_file():
        raise SpecError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: malformed JSON ({e})") from None
    arrays: dict[str, np.ndarray] = {}
    if isinstance(data, dict) and data.get("sidecar"):
        side = path.with_name(str(data["sidecar"]))
        if not side.is_file():
            raise SpecError(f"sidecar: {side} not found (it must sit next to {path.name})")
        try:
            arrays = load_file(str(side))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise SpecError(f"sidecar: {side} is not a valid safetensors file ({e})") from None
    return data, arrays
