"""The index folder on disk.

::

    manifest.json                   settings: format, weights digest, sites, top_k, bins, ...
    state-000000256.safetensors     the statistics after documents [0, 256): one file per
                                    finished chunk, each the merge of every chunk before it
    tokenizer/                      the model's tokenizer (dashboards decode without the model)

Every file is written to ``NAME.tmp`` and renamed over ``NAME`` (``os.replace``), so a killed
run leaves complete files and at most a ``.tmp`` that the next run deletes. The state file with
the most documents is the index; its metadata (documents, tokens, the corpus sources and how far
each was read) is the truth, the manifest only repeats it for people and tools. Older state
files are deleted once a newer one is written.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from neurolens.errors import InputError

FORMAT = "neurolens.index/1"
MANIFEST = "manifest.json"
STATE_RE = re.compile(r"^state-(\d{9})\.safetensors$")
ARRAYS = ("top_values", "top_doc", "top_pos", "hist", "above", "min", "max", "sum", "lo", "step")


def state_name(n_docs: int) -> str:
    return f"state-{n_docs:09d}.safetensors"


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    _fsync_replace(tmp, path)


def write_state(folder: Path, n_docs: int, arrays: dict[str, dict[str, np.ndarray]],
                meta: dict) -> Path:
    """One state file (``{site}/{name}`` tensors, ``meta`` as JSON in the header), atomically."""
    from safetensors.numpy import save_file
    path = folder / state_name(n_docs)
    tmp = path.with_name(path.name + ".tmp")
    flat = {f"{site}/{k}": np.ascontiguousarray(v) for site, a in arrays.items()
            for k, v in a.items()}
    save_file(flat, str(tmp), metadata={"neurolens.index": json.dumps(meta)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)     # like any file the user writes (not 0600)
    _fsync_replace(tmp, path)
    return path


def read_manifest(folder: Path) -> dict:
    """The manifest of an index folder, checked (one-line InputErrors)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"index folder not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder} is not a neuron index (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: malformed JSON ({e})") from None
    fmt = str(data.get("format", "")) if isinstance(data, dict) else ""
    if not fmt.startswith("neurolens.index/"):
        raise InputError(f"{path}: not a neuron index manifest (format {fmt!r})")
    if fmt != FORMAT:
        raise InputError(f"the index at {folder} has format {fmt}, newer than this neurolens "
                         f"reads ({FORMAT}); update neurolens or rebuild the index")
    return data


def state_files(folder: Path) -> list[tuple[int, Path]]:
    """Complete state files, fewest documents first."""
    out = []
    for p in Path(folder).iterdir():
        m = STATE_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def read_state_meta(path: Path) -> dict:
    """The JSON metadata of a state file (one-line InputError when the file is damaged)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        return json.loads(meta["neurolens.index"])
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise InputError(f"corrupt index chunk {path} ({type(e).__name__}); delete it and "
                         "rebuild from the previous one") from None


def read_state_arrays(path: Path, site: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(f"{site}/{k}") for k in ARRAYS}
    except Exception as e:  # noqa: BLE001
        raise InputError(f"corrupt index chunk {path} ({type(e).__name__}: site {site})") \
            from None


def latest_state(folder: Path) -> tuple[Path, dict] | None:
    states = state_files(folder)
    if not states:
        return None
    path = states[-1][1]
    return path, read_state_meta(path)


def clean(folder: Path, keep: Path | None) -> None:
    """Delete leftover ``.tmp`` files and every state file but ``keep``."""
    for p in Path(folder).iterdir():
        if p.name.endswith(".tmp") or (STATE_RE.match(p.name) and p != keep):
            try:
                p.unlink()
            except OSError:
                pass
