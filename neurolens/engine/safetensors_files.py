"""A checkpoint folder's safetensors files, read and written without holding the weights.

- :func:`weight_files` names the files ``transformers`` loads from a folder (``model.safetensors``,
  else the shards of ``model.safetensors.index.json``), in the same order of preference.
- :func:`local_snapshot` finds a hub id's folder in the hub cache (no network).
- :func:`read_header` reads only a file's header (8 bytes of length, then JSON with every tensor's
  dtype, shape and byte range): no weight is read.
- :class:`ShardWriter` writes one safetensors file tensor by tensor: the header first (from the
  names, dtypes and shapes), then each tensor's bytes as it comes, so only one tensor at a time
  is in memory.

Pure Python apart from the writer's tensors (torch is imported where they are used).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"

#: safetensors dtype codes -> bytes per element
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_CODES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
#: torch dtype names -> safetensors codes (the writer's side)
TORCH_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
               "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
               "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
_MAX_HEADER = 100_000_000     # the limit the safetensors library itself enforces


@dataclass(frozen=True)
class TensorInfo:
    dtype: str                 # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def weight_files(folder: str | Path) -> list[Path] | None:
    """The safetensors files ``transformers`` loads from ``folder``, or None when it has none
    (or the index names a file that is missing)."""
    folder = Path(folder)
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    if (folder / INDEX).is_file():
        try:
            weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
        return files if files and all(f.is_file() for f in files) else None
    return None


def local_snapshot(repo_id: str) -> Path | None:
    """The hub cache's folder of ``repo_id`` (default revision) when its weights are there; no
    network."""
    try:
        from huggingface_hub import try_to_load_from_cache
        for fn in (SINGLE, INDEX):
            hit = try_to_load_from_cache(repo_id, fn)
            if isinstance(hit, str):
                return Path(hit).parent
    except Exception:  # noqa: BLE001 - not a hub id, no cache: nothing local
        return None
    return None


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """Every tensor of a safetensors file -> its dtype and shape, from the header alone."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise ValueError(f"{path} is not a safetensors file (header of {n} bytes)")
        header = json.loads(f.read(n))
    return {k: TensorInfo(v["dtype"], tuple(v["shape"]))
            for k, v in header.items() if k != "__metadata__"}


class ShardWriter:
    """One safetensors file written tensor by tensor, in the order :attr:`names` gives (largest
    element size first, then by name, as the safetensors library orders them, so every tensor's
    data is aligned to its element size)."""

    def __init__(self, path: str | Path, infos: dict[str, TensorInfo],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.names = sorted(infos, key=lambda k: (-DTYPE_BYTES[infos[k].dtype], k))
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        self._sizes = {}
        for k in self.names:
            size = infos[k].numel * DTYPE_BYTES[infos[k].dtype]
            header[k] = {"dtype": infos[k].dtype, "shape": list(infos[k].shape),
                         "data_offsets": [offset, offset + size]}
            self._sizes[k] = size
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._infos = infos
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(raw)) + raw)
        self._next, self._pos = 0, 0          # the tensor being written, its bytes so far

    def write(self, name: str, tensor) -> None:
        """Append data of ``name`` (a torch tensor of the announced dtype: the whole tensor, or
        consecutive runs of its rows); tensors come in the order of :attr:`names`."""
        import torch
        want = self.names[self._next] if self._next < len(self.names) else None
        info = self._infos.get(name)
        if name != want:
            raise ValueError(f"tensor {name} written out of order (expected {want})")
        if TORCH_CODES.get(str(tensor.dtype).removeprefix("torch.")) != info.dtype or \
                (tuple(tensor.shape) != info.shape and tuple(tensor.shape[1:]) != info.shape[1:]):
            raise ValueError(f"tensor {name}: {tensor.dtype} {tuple(tensor.shape)} does not match "
                             f"the header ({info.dtype} {info.shape})")
        t = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        if self._pos + t.numel() > self._sizes[name]:
            raise ValueError(f"tensor {name}: more bytes than the header's {self._sizes[name]}")
        if t.numel():
            self._f.write(memoryview(t.numpy()))
        self._pos += t.numel()
        if self._pos == self._sizes[name]:
            self._next, self._pos = self._next + 1, 0

    def close(self) -> None:
        done = self._next == len(self.names)
        self._f.close()
        if not done:
            raise ValueError(f"{self.path}: {len(self.names) - self._next} tensor(s) not written")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()
