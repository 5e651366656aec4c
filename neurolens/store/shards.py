"""Bounded-memory writing of large captures.

:class:`SafetensorsStreamWriter` appends tensors to a temporary data file as they arrive and
writes a valid safetensors file (header first) when closed, so a capture of any size needs only
one batch in memory. The result loads with ``safetensors.safe_open`` (memory-mapped).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
           np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("uint8"): "U8",
           np.dtype("bool"): "BOOL", np.dtype("int8"): "I8", np.dtype("int16"): "I16"}


class SafetensorsStreamWriter:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._data_path = self.path.with_name(self.path.name + ".data.tmp")
        self._fh = open(self._data_path, "wb")
        self._index: dict[str, dict] = {}
        self._offset = 0
        self.closed = False

    def add(self, name: str, array: np.ndarray) -> None:
        if name in self._index:
            raise ValueError(f"duplicate tensor name {name!r}")
        a = np.ascontiguousarray(array)
        if a.dtype not in _DTYPES:
            raise TypeError(f"unsupported dtype {a.dtype} for {name!r}")
        buf = memoryview(a).cast("B")
        self._fh.write(buf)
        n = a.nbytes
        self._index[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape),
                             "data_offsets": [self._offset, self._offset + n]}
        self._offset += n

    @property
    def nbytes(self) -> int:
        return self._offset

    def close(self, metadata: dict[str, str] | None = None) -> Path:
        """Write the final file atomically: header, then the data streamed from the temp file."""
        self._fh.close()
        header = dict(self._index)
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)  # align the data start
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out, open(self._data_path, "rb") as src:
            out.write(struct.pack("<Q", len(hb)))
            out.write(hb)
            shutil.copyfileobj(src, out, 16 << 20)
        os.replace(tmp, self.path)
        self._data_path.unlink(missing_ok=True)
        self.closed = True
        return self.path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._data_path.unlink(missing_ok=True)
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.closed:
            self.abort() if exc_type else self.close()
