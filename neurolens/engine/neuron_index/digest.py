"""A digest of every weight of a model, the key of its neuron index.

``LanguageModel.fingerprint`` hashes the config, the shapes and a sample of one parameter: two
models that differ in one weight (a pruned export and its source) share it. The digest here reads
every byte of every parameter and persistent buffer, with its name, dtype and shape, in a fixed
order, plus the edits the model was loaded with (an export's sidecar changes what the neurons
compute without changing a weight). Tensors are hashed in their own dtype, a slice at a time, so
no float32 copy of the model is ever made.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

#: bytes hashed per step (a device tensor is copied to the CPU one slice at a time)
_SLICE = 1 << 25
_ATTR = "_neurolens_weights_digest"


def _modules(model) -> list[tuple[str, torch.nn.Module]]:
    """The torch modules holding a model's weights, named (LM, pipeline, spiking network)."""
    if isinstance(model, torch.nn.Module):
        return [("", model)]
    if isinstance(getattr(model, "hf", None), torch.nn.Module):
        return [("", model.hf)]
    pipe = getattr(model, "pipe", None)
    if pipe is not None and hasattr(pipe, "components"):
        return [(k, v) for k, v in sorted(pipe.components.items())
                if isinstance(v, torch.nn.Module)]
    if isinstance(getattr(model, "net", None), torch.nn.Module):
        return [("", model.net)]
    raise TypeError(f"no weights found on {type(model).__name__}")


def _update(h, t: torch.Tensor) -> None:
    """Feed the raw bytes of ``t`` (any dtype, any device) to ``h``, a slice at a time."""
    t = t.detach()
    if t.numel() == 0:
        return
    if not t.is_contiguous():
        t = t.contiguous()
    flat = t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t.reshape(-1).to(
        torch.uint8)
    for start in range(0, flat.numel(), _SLICE):
        part = flat[start:start + _SLICE]
        if part.device.type != "cpu":
            part = part.cpu()
        h.update(memoryview(part.numpy()))


def _tensors(module: torch.nn.Module):
    """Parameters (each once, tied ones under their first name), then persistent buffers."""
    yield from module.named_parameters(remove_duplicate=True)
    persistent = set(module.state_dict().keys())
    for name, b in module.named_buffers(remove_duplicate=True):
        if name in persistent:
            yield name, b


def weights_digest(model) -> str:
    """Hex blake2b digest of every weight (name, dtype, shape, bytes) and the model's own
    edits. Cached on the model object (weights never change in place during a session: edits
    are hooks)."""
    cached = getattr(model, _ATTR, None)
    if cached is not None:
        return cached
    h = hashlib.blake2b(digest_size=16)
    h.update(b"neurolens.weights/1\0")
    for prefix, module in _modules(model):
        for name, t in _tensors(module):
            full = f"{prefix}.{name}" if prefix else name
            h.update(f"{full}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
            _update(h, t)
    base = getattr(model, "base_edits", None)
    if base is not None and len(base):
        arrays: dict = {}
        d = base.to_dict(arrays)
        d.pop("model", None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
        for k in sorted(arrays):
            h.update(k.encode())
            _update(h, torch.from_numpy(np.ascontiguousarray(arrays[k])))
    digest = h.hexdigest()
    try:
        setattr(model, _ATTR, digest)
    except AttributeError:  # pragma: no cover - a slotted object: no cache
        pass
    return digest
