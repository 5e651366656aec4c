"""Pre-flight: will a model fit before its weights are read?

:func:`estimate` sums the tensors of a checkpoint's safetensors headers (dtypes and shapes; no
weight is read) at the dtype the model will be loaded with: floating tensors take the load dtype,
the others keep theirs. :func:`preflight` compares that with the memory available where the model
goes (the CPU's ``MemAvailable``; a GPU's free memory, and the CPU's too, since a GPU load passes
through it) and raises :class:`~neurolens.errors.LoadError` (CLI exit 2, a dialog in the GUI)
with one line that gives the estimate, the memory available and the options. With
``device="auto"`` accelerate places the layers over the GPUs, the CPU and disk: the weights must
fit in all of them together (the GPUs' free memory, the CPU's, within ``max_memory`` where it
is given, and the free disk space of the offload folder). Nothing is checked with
``NEUROLENS_SKIP_MEMORY_CHECK=1`` set or ``check_memory=False`` given to ``load``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from neurolens.engine.safetensors_files import (DTYPE_BYTES, FLOAT_CODES, TORCH_CODES,
                                                TensorInfo, local_snapshot, read_header,
                                                weight_files)
from neurolens.errors import LoadError

ENV_SKIP = "NEUROLENS_SKIP_MEMORY_CHECK"
#: working memory on top of the weights: activations, caches, the allocator's slack
OVERHEAD_FRACTION = 0.1
OVERHEAD_MIN = 256 * 2**20
_NAMES = {v: k for k, v in TORCH_CODES.items()}


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int        # the tensors of the checkpoint at the load dtype
    dtype: str                # what floating tensors are loaded as, e.g. "bfloat16"
    n_params: int
    n_files: int

    @property
    def needed_bytes(self) -> int:
        """Weights plus working memory."""
        return self.weights_bytes + max(int(self.weights_bytes * OVERHEAD_FRACTION), OVERHEAD_MIN)

    def at(self, dtype: str) -> int:
        """Needed bytes if floating tensors were ``dtype`` instead (for the message)."""
        scale = DTYPE_BYTES[TORCH_CODES[dtype]] / DTYPE_BYTES[TORCH_CODES[self.dtype]]
        w = int(self.weights_bytes * scale)
        return w + max(int(w * OVERHEAD_FRACTION), OVERHEAD_MIN)

    def as_dict(self) -> dict:
        return {"weights_bytes": self.weights_bytes, "needed_bytes": self.needed_bytes,
                "dtype": self.dtype, "n_params": self.n_params}


def dtype_name(dtype) -> str | None:
    """A torch dtype or its name -> "float32" etc.; None / "auto" -> None."""
    if dtype is None or dtype == "auto":
        return None
    from neurolens.engine.dtypes import torch_dtype
    return str(torch_dtype(dtype)).removeprefix("torch.")


def _auto_dtype(folder: Path, infos: dict[str, TensorInfo]) -> str:
    """What ``transformers`` loads with no dtype (or "auto"): the config's dtype, else the
    first floating tensor's."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    for key in ("dtype", "torch_dtype"):
        name = cfg.get(key) if isinstance(cfg, dict) else None
        if isinstance(name, str) and name in TORCH_CODES:
            return name
    for info in infos.values():
        if info.dtype in FLOAT_CODES:
            return _NAMES[info.dtype]
    return "float32"


def estimate(folder: str | Path, dtype=None) -> Estimate | None:
    """The checkpoint in ``folder`` at ``dtype`` (None / "auto": as ``transformers`` picks),
    from its safetensors headers; None when it has no safetensors files."""
    folder = Path(folder)
    files = weight_files(folder)
    if not files:
        return None
    infos: dict[str, TensorInfo] = {}
    for f in files:
        for k, v in read_header(f).items():
            infos.setdefault(k, v)
    name = dtype_name(dtype) or _auto_dtype(folder, infos)
    size = DTYPE_BYTES[TORCH_CODES[name]]
    total = sum(i.numel * (size if i.dtype in FLOAT_CODES else DTYPE_BYTES[i.dtype])
                for i in infos.values())
    return Estimate(total, name, sum(i.numel for i in infos.values()), len(files))


def available_memory(device: str = "cpu") -> int | None:
    """Bytes free for a model on ``device`` ("cpu", "cuda", "cuda:N"); None when unknown."""
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return None          # the load itself says the device is not usable
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.mem_get_info(index)[0])
    if device != "cpu":
        return None
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def report(name_or_path: str | Path, dtype=None, device: str = "cpu") -> dict | None:
    """The estimate of ``name_or_path`` at ``dtype`` and the memory available on ``device`` as
    plain data (``neurolens info``); None when the checkpoint has no safetensors files."""
    folder = Path(name_or_path).expanduser()
    folder = folder if folder.is_dir() else local_snapshot(str(name_or_path))
    try:
        est = estimate(folder, dtype) if folder is not None else None
    except (OSError, ValueError, KeyError):
        est = None
    if est is None:
        return None
    free = auto_capacity()[0] if device == "auto" else available_memory(device)
    return {**est.as_dict(), "device": device, "available_bytes": free}


def gb(n: int) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def auto_capacity(max_memory=None) -> tuple[int, str]:
    """Bytes that ``device="auto"`` can place weights in (GPUs, CPU, disk) and how they add up;
    ``max_memory`` (accelerate's form) caps the devices it names."""
    from neurolens.engine.offload import cache_dir, parse_max_memory
    caps = parse_max_memory(max_memory) or {}
    places = []
    try:
        import torch
        places = [(i, f"cuda:{i}") for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no usable GPU runtime: CPU and disk only
        places = []
    places.append(("cpu", "cpu"))
    total, parts = 0, []
    for key, dev in places:
        free = available_memory(dev) or 0
        if key in caps:
            free = min(free, _bytes(caps[key]))
        total += free
        parts.append(f"{gb(free)} {dev}")
    try:
        folder = cache_dir()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        disk = shutil.disk_usage(folder).free
    except OSError:
        disk = 0
    total += disk
    parts.append(f"{gb(disk)} disk")
    return total, " + ".join(parts)


def _bytes(v) -> int:
    """accelerate's memory sizes: an int, or "8GiB", "500MB", ..."""
    if isinstance(v, (int, float)):
        return int(v)
    from accelerate.utils import convert_file_size_to_int
    return int(convert_file_size_to_int(str(v)))


def preflight(name_or_path: str | Path, *, device: str = "cpu", dtype=None,
              enabled: bool = True, max_memory=None) -> Estimate | None:
    """Raise LoadError when the model of ``name_or_path`` (a folder, or a hub id already in the
    cache) will not fit on ``device`` at ``dtype``; return the estimate (None: not checked)."""
    if not enabled or os.environ.get(ENV_SKIP, "") not in ("", "0"):
        return None
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        folder = local_snapshot(str(name_or_path))
        if folder is None:
            return None
    try:
        est = estimate(folder, dtype)
    except (OSError, ValueError, KeyError):
        return None              # a corrupt file: the load reports it
    if est is None:
        return None
    if device == "auto":
        total, parts = auto_capacity(max_memory)
        if est.weights_bytes > total:
            raise LoadError(f"{name_or_path} needs about {gb(est.weights_bytes)} of weights at "
                            f"{est.dtype} but the GPUs, the CPU and disk hold {gb(total)} "
                            f"({parts}): try a smaller dtype or model, or free disk space "
                            f"({ENV_SKIP}=1 loads anyway)")
        return est
    places = [device] if device == "cpu" else [device, "cpu"]   # a GPU load goes through the CPU
    for place in places:
        need = est.needed_bytes if place == device else est.weights_bytes
        free = available_memory(place)
        if free is not None and need > free:
            raise LoadError(fit_message(str(name_or_path), est, need, free, place))
    return est


def fit_message(name: str, est: Estimate, need: int, free: int, place: str) -> str:
    options = []
    if DTYPE_BYTES[TORCH_CODES[est.dtype]] > 2:
        options.append(f"--dtype bfloat16 (about {gb(est.at('bfloat16'))})")
    options += ["--device auto (accelerate spreads the layers over the GPUs, the CPU and disk)",
                "a smaller model"]
    return (f"{name} needs about {gb(need)} at {est.dtype} ({gb(est.weights_bytes)} of weights) "
            f"but {gb(free)} is available on {place}: try {', '.join(options[:-1])} or "
            f"{options[-1]} ({ENV_SKIP}=1 loads anyway)")
