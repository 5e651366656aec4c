"""The dtypes users may name (CLI ``--dtype``, ``nl.load(dtype=...)``), for every model family."""

from __future__ import annotations

from neurolens.errors import LoadError

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def torch_dtype(dtype):
    """None / "auto" pass through; a torch dtype or one of its names -> the torch dtype."""
    import torch
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise LoadError(f"unknown dtype '{dtype}' (use float32, float16 or bfloat16)")
    return getattr(torch, name)
