"""Models spread over devices and disk by accelerate (``device="auto"``).

``load(..., device="auto")`` asks ``transformers`` for ``device_map="auto"``: accelerate places
whole layers on the GPUs present, then the CPU, then disk, within ``max_memory``, and moves each
layer's weights to its execution device for its forward (hooks on the modules). An offloaded
parameter is a placeholder on the ``meta`` device between forwards. This module holds what the
rest of the engine needs to know about that:

- :func:`from_pretrained_kwargs`: the loading keywords (``device_map``, ``max_memory``, an
  offload folder in the user's cache, removed when the process ends);
- :func:`input_device`: where inputs go (the first GPU of the map, else the CPU);
- :func:`is_offloaded`, :func:`parameter`: whether a model has offloaded weights, and one
  parameter's values wherever they are (read from the offload, one module at a time);
- :func:`gathered_copy`: a plain CPU copy of the whole model (the in-memory export's fallback).

Captures need nothing here: hooks see each layer's values on its execution device, reduce them
there and copy once to the CPU (:mod:`neurolens.engine.capture`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch


def cache_dir() -> Path:
    """The user's cache folder of neurolens (``NEUROLENS_CACHE_DIR`` overrides it)."""
    env = os.environ.get("NEUROLENS_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("neurolens"))


def _offload_folder() -> str:
    """A fresh folder for the weights accelerate writes to disk (those it cannot map from the
    source files, e.g. at another dtype), removed when the process ends."""
    root = cache_dir() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
    atexit.register(shutil.rmtree, folder, True)
    return folder


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10,
         "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DEVICE = re.compile(r"^(cpu|disk|mps|\d+|(cuda|xpu|npu):\d+)$")


def parse_max_memory(max_memory) -> dict | None:
    """``{"cpu": "8GiB", 0: "20GiB"}`` (accelerate's form; ``"cuda:0"`` keys become 0), a
    string ``"cpu=8GiB,0=20GiB"`` (the CLI's ``--max-memory``), or None (accelerate uses what is
    free). Devices: ``cpu``, ``disk``, ``mps``, a GPU index or ``cuda:N``; sizes: bytes or a
    number with a unit (``B``, ``KB``...``TB``, ``KiB``...``TiB``; case ignored), given back as
    bytes. Anything else: an :class:`~neurolens.errors.InputError` naming the bad part."""
    from neurolens.errors import InputError
    if max_memory is None or isinstance(max_memory, dict) and not max_memory:
        return None
    if isinstance(max_memory, str):
        pairs = []
        for part in max_memory.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise InputError(f"--max-memory: {part.strip()!r} is not DEVICE=SIZE "
                                 "(e.g. cpu=8GiB,0=20GiB)")
            pairs.append(part.split("=", 1))
        if not pairs:
            raise InputError("--max-memory: no DEVICE=SIZE given (e.g. cpu=8GiB,0=20GiB)")
        max_memory = {k.strip(): v.strip() for k, v in pairs}
    out: dict = {}
    for k, v in dict(max_memory).items():
        if not _DEVICE.match(str(k).strip().lower()):
            raise InputError(f"max memory: unknown device {str(k)!r} (cpu, disk, a GPU index "
                             "or cuda:N)")
        m = None if isinstance(v, bool) else _SIZE.match(str(v))
        if m is None:
            raise InputError(f"max memory: {str(v)!r} for {k} is not a size (e.g. 8GiB, "
                             "500MB or bytes)")
        key = str(k).strip().lower().removeprefix("cuda:")
        out[int(key) if key.isdigit() else key] = int(float(m.group(1))
                                                      * _UNIT[(m.group(2) or "").lower()])
    return out


def from_pretrained_kwargs(max_memory=None) -> dict:
    kw = {"device_map": "auto", "offload_folder": _offload_folder()}
    mm = parse_max_memory(max_memory)
    if mm is not None:
        kw["max_memory"] = mm
    return kw


def device_map(hf) -> dict:
    """Module name -> its device ("cpu", "disk", a GPU index) of an accelerate-placed model
    (empty when the model sits whole on one device)."""
    return dict(getattr(hf, "hf_device_map", None) or {})


def input_device(hf) -> torch.device:
    """Where a placed model's inputs go: its first GPU, else the CPU (accelerate runs the
    CPU- and disk-offloaded layers there)."""
    for d in device_map(hf).values():
        if isinstance(d, int) or (isinstance(d, str) and d.startswith(("cuda", "xpu", "mps"))):
            return torch.device(f"cuda:{d}" if isinstance(d, int) else d)
    for p in hf.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def is_offloaded(hf) -> bool:
    """True when some weights of ``hf`` are placeholders (offloaded to the CPU or disk)."""
    return any(p.device.type == "meta" for p in hf.parameters())


def parameter(hf, name: str) -> torch.Tensor:
    """The values of parameter ``name`` of ``hf`` (a detached tensor; read from the offload,
    on the CPU, when the parameter is a placeholder)."""
    mod_name, _, pname = name.rpartition(".")
    module = hf.get_submodule(mod_name) if mod_name else hf
    p = getattr(module, pname)
    if p.device.type != "meta":
        return p.detach()
    from accelerate.utils import align_module_device
    with align_module_device(module, "cpu"):
        return getattr(module, pname).detach().clone()


@contextlib.contextmanager
def _nothing():
    yield


def gathered_copy(hf):
    """A plain copy of ``hf`` on the CPU with every weight in memory (no hooks, no
    placeholders): accelerate gathers the offloaded modules one at a time."""
    from accelerate.utils import align_module_device, has_offloaded_params
    state: dict[str, torch.Tensor] = {}
    for name, module in hf.named_modules():
        prefix = f"{name}." if name else ""
        with align_module_device(module, "cpu") if has_offloaded_params(module) else _nothing():
            own = list(module.named_parameters(recurse=False)) + \
                [(k, b) for k, b in module.named_buffers(recurse=False)
                 if k not in module._non_persistent_buffers_set]
            for k, t in own:
                if t.device.type != "meta":
                    state[prefix + k] = t.detach().to("cpu", copy=True)
    with torch.device("meta"):
        copy = type(hf)(hf.config)
    copy.to_empty(device="cpu")
    copy.load_state_dict(state, strict=False)
    loaded = set(state)
    for name, b in hf.named_buffers():        # non-persistent buffers (rotary frequencies)
        if name not in loaded and b.device.type != "meta":
            mod_name, _, bname = name.rpartition(".")
            owner = copy.get_submodule(mod_name) if mod_name else copy
            owner._buffers[bname] = b.detach().to("cpu").clone()
    copy.tie_weights()
    missing = [n for n, p in copy.named_parameters() if n not in loaded]
    tied = {id(p) for n, p in copy.named_parameters() if n in loaded}
    missing = [n for n in missing if id(copy.get_parameter(n)) not in tied]
    if missing:
        raise RuntimeError(f"could not gather {missing[0]} from the offloaded model")
    copy.generation_config = hf.generation_config
    return copy.eval()
