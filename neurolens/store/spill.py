"""Rows moved out of memory: one temporary file per store, written with plain writes and read
back with plain reads (no memory map, so the pages the kernel caches are not the process's
resident memory). The file has no name on disk once opened (POSIX) and goes when it is closed
or the process ends."""

from __future__ import annotations

import os
import tempfile
import weakref

import numpy as np


class Spilled:
    """Where one run of rows lies in the spill file: its offset, shape and dtype (``packed``:
    16-bit words to unpack, see :class:`neurolens.store.capture_store.Packed`)."""

    __slots__ = ("offset", "shape", "dtype", "packed")

    def __init__(self, offset: int, shape: tuple[int, ...], dtype: np.dtype, packed: bool):
        self.offset, self.shape, self.dtype, self.packed = offset, shape, dtype, packed

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


class SpillFile:
    """Append-only file of row arrays (not thread-safe: the store calls it under its lock)."""

    def __init__(self, folder: str | None = None):
        """``folder``: where the file goes (made if missing; the system's temporary folder when
        None or when it cannot be made)."""
        if folder is not None:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError:
                folder = None
        self._f = tempfile.TemporaryFile(prefix="neurolens-rows-", dir=folder, buffering=0)
        self.size = 0
        weakref.finalize(self, self._f.close)    # closed (and gone) with its store

    def write(self, data: np.ndarray, packed: bool) -> Spilled:
        data = np.ascontiguousarray(data)
        self._f.seek(self.size)
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += self._f.write(view[done:])
        rec = Spilled(self.size, data.shape, data.dtype, packed)
        self.size += data.nbytes
        return rec

    def read(self, rec: Spilled) -> np.ndarray:
        out = np.empty(rec.shape, rec.dtype)
        view = memoryview(out).cast("B")
        self._f.seek(rec.offset)
        done = 0
        while done < len(view):
            n = self._f.readinto(view[done:])
            if not n:
                raise OSError("the spill file of the capture store is shorter than expected")
            done += n
        return out

    def reset(self) -> None:
        self._f.truncate(0)
        self.size = 0

    def close(self) -> None:
        self._f.close()
