"""Spike sample files: the Spiking Heidelberg Digits HDF5 layout and neurolens' safetensors.

- SHD (``.h5`` / ``.hdf5``, read with h5py): ``spikes/times`` (per sample, spike times in
  seconds), ``spikes/units`` (per sample, the channel of each spike, 0..699) and ``labels``.
  Binned as the paper bins them: ``dt_ms`` bins (10 ms) and channels pooled (summed) in groups of
  ``pool`` (5: 700 -> 140 inputs): bin ``floor(t / dt)``, channel ``unit // pool``, counts
  summed; spikes at or after ``n_bins`` bins are dropped.
- safetensors: ``spikes`` ``[samples, time, channels]`` (float or uint8 counts) and ``labels``
  ``[samples]`` (integers), optional; string metadata is kept.

Both give a :class:`SampleSet`: ``spikes`` float32 ``[n, time, channels]``, ``labels`` int64 or
None.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurolens.errors import InputError

SHD_CHANNELS = 700
HDF5_SUFFIXES = (".h5", ".hdf5")


@dataclass
class SampleSet:
    spikes: np.ndarray                 # [n, time, channels] float32
    labels: np.ndarray | None          # [n] int64
    path: str = ""
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.spikes.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.spikes.shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.spikes.shape[2])

    def subset(self, idx) -> SampleSet:
        idx = np.asarray(idx)
        return SampleSet(self.spikes[idx], None if self.labels is None else self.labels[idx],
                         self.path, dict(self.metadata))


def _check(spikes: np.ndarray, labels: np.ndarray | None, where: str) -> None:
    if spikes.ndim != 3:
        raise InputError(f"{where}: spikes must be [samples, time, channels], got shape "
                         f"{tuple(spikes.shape)}")
    if spikes.shape[0] == 0 or spikes.shape[1] == 0 or spikes.shape[2] == 0:
        raise InputError(f"{where}: empty sample set (shape {tuple(spikes.shape)})")
    if not np.all(np.isfinite(spikes)) or (spikes < 0).any():
        raise InputError(f"{where}: spikes must be finite, non-negative counts")
    if labels is not None and labels.shape != (spikes.shape[0],):
        raise InputError(f"{where}: {labels.shape[0] if labels.ndim else 0} labels for "
                         f"{spikes.shape[0]} samples")


def bin_spikes(times: list, units: list, *, dt_ms: float = 10.0, pool: int = 5,
               n_channels: int = SHD_CHANNELS, n_bins: int | None = None) -> np.ndarray:
    """Per-sample spike times (s) and channels -> counts ``[n, n_bins, ceil(n_channels/pool)]``
    (float32). ``n_bins`` defaults to the bins the latest spike needs."""
    dt = dt_ms / 1000.0
    if n_bins is None:
        last = max((float(np.max(t)) for t in times if len(t)), default=0.0)
        n_bins = int(math.floor(last / dt + 1e-6)) + 1
    out = np.zeros((len(times), n_bins, -(-n_channels // pool)), dtype=np.float32)
    for i, (t, u) in enumerate(zip(times, units)):
        t = np.asarray(t, dtype=np.float64)
        u = np.asarray(u, dtype=np.int64)
        if t.shape != u.shape:
            raise InputError(f"sample {i}: {t.size} spike times but {u.size} units")
        if u.size and (u.min() < 0 or u.max() >= n_channels):
            raise InputError(f"sample {i}: unit {int(u.max())} outside 0..{n_channels - 1}")
        # + 1e-6 bins: a float32 time of 0.03 s (29.99999933 ms) is bin 3, as written
        b = np.floor(t / dt + 1e-6).astype(np.int64)
        keep = (b >= 0) & (b < n_bins)
        np.add.at(out[i], (b[keep], u[keep] // pool), 1.0)
    return out


def read_shd(path: str | os.PathLike, *, dt_ms: float = 10.0, pool: int = 5,
             n_bins: int | None = None, limit: int | None = None) -> SampleSet:
    """Read a Spiking Heidelberg Digits file (``shd_train.h5`` / ``shd_test.h5`` layout)."""
    import h5py
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"cannot read {path} as HDF5 ({str(e).splitlines()[0][:160]})") from None
    with f:
        for key in ("spikes/times", "spikes/units", "labels"):
            if key not in f:
                raise InputError(f"{path}: no '{key}' (not in the SHD layout: spikes/times, "
                                 "spikes/units, labels)")
        n = len(f["labels"])
        if limit is not None:
            n = min(n, int(limit))
        times = [np.asarray(f["spikes/times"][i]) for i in range(n)]
        units = [np.asarray(f["spikes/units"][i]) for i in range(n)]
        labels = np.asarray(f["labels"][:n]).astype(np.int64)
        meta = {"format": "shd", "dt_ms": str(dt_ms), "pool": str(pool)}
    if n == 0:
        raise InputError(f"{path}: no samples")
    spikes = bin_spikes(times, units, dt_ms=dt_ms, pool=pool, n_bins=n_bins)
    return SampleSet(spikes, labels, str(path), meta)


def load_samples(path: str | os.PathLike) -> SampleSet:
    """Read a safetensors sample file (``spikes`` and optional ``labels``)."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sample file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = set(f.keys())
            meta = dict(f.metadata() or {})
            if "spikes" not in keys:
                raise InputError(f"{path}: no 'spikes' tensor (a sample file holds spikes "
                                 "[samples, time, channels] and labels [samples])")
            spikes = f.get_tensor("spikes")
            labels = f.get_tensor("labels") if "labels" in keys else None
    except (SafetensorError, OSError) as e:
        raise InputError(f"cannot read {path} ({str(e).splitlines()[0][:160]})") from None
    if spikes.dtype.kind not in "fiub":
        raise InputError(f"{path}: spikes must be numbers, got {spikes.dtype}")
    spikes = spikes.astype(np.float32)
    if labels is not None:
        if labels.dtype.kind not in "iu":
            raise InputError(f"{path}: labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.int64).reshape(-1)
    _check(spikes, labels, str(path))
    return SampleSet(spikes, labels, str(path), meta)


def save_samples(path: str | os.PathLike, spikes: np.ndarray, labels: np.ndarray | None = None,
                 metadata: dict | None = None) -> Path:
    """Write a sample file (uint8 when every count fits, else float32)."""
    from safetensors.numpy import save_file
    path = Path(path)
    spikes = np.asarray(spikes)
    _check(spikes.astype(np.float32), None if labels is None else np.asarray(labels),
           str(path))
    fits = spikes.dtype == np.uint8 or (np.all(spikes == np.round(spikes)) and spikes.max() < 256)
    arrays = {"spikes": np.ascontiguousarray(spikes.astype(np.uint8 if fits else np.float32))}
    if labels is not None:
        arrays["labels"] = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)
    return path


def read_samples(path: str | os.PathLike, **shd_kw) -> SampleSet:
    """A sample file of either kind, by its suffix (``.h5``/``.hdf5``: SHD; else safetensors)."""
    p = Path(path)
    if p.suffix.lower() in HDF5_SUFFIXES:
        if not p.is_file():
            raise InputError(f"sample file not found: {p}")
        return read_shd(p, **shd_kw)
    return load_samples(p)
