"""Spike sample files: the SHD HDF5 reader on a small file in the SHD layout (binning and
pooling counted by hand), the safetensors sample files, and the synthetic motif task."""

from __future__ import annotations

import numpy as np
import pytest

from neurolens.engine.snn.data import (load_samples, read_samples, read_shd, save_samples)
from neurolens.errors import InputError
from neurolens.evals.spike_motifs import MotifTask


def _write_shd(path, times, units, labels):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        ft = h5py.vlen_dtype(np.dtype("float32"))
        fu = h5py.vlen_dtype(np.dtype("uint16"))
        g = f.create_group("spikes")
        dt = g.create_dataset("times", (len(times),), dtype=ft)
        du = g.create_dataset("units", (len(units),), dtype=fu)
        for i, (t, u) in enumerate(zip(times, units)):
            dt[i] = np.asarray(t, dtype=np.float32)
            du[i] = np.asarray(u, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        f.create_group("extra").create_dataset("speaker", data=np.zeros(len(labels)))


@pytest.fixture
def shd_file(tmp_path):
    p = tmp_path / "shd_tiny.h5"
    _write_shd(p,
               times=[[0.001, 0.009, 0.0105, 0.025, 0.025, 0.03],
                      [0.0],
                      []],
               units=[[0, 4, 5, 699, 3, 9],
                      [12],
                      []],
               labels=[3, 19, 0])
    return p


def test_shd_reader_bins_10ms_and_pools_by_5(shd_file):
    s = read_shd(shd_file)
    # sample 0: spike (time s, unit) -> (bin = floor(t / 10 ms), channel = unit // 5)
    #   (0.001, 0) -> (0, 0); (0.009, 4) -> (0, 0); (0.0105, 5) -> (1, 1);
    #   (0.025, 699) -> (2, 139); (0.025, 3) -> (2, 0); (0.03, 9) -> (3, 1)
    # the latest spike (30 ms) needs 4 bins; 700 channels / 5 = 140
    assert s.spikes.shape == (3, 4, 140)
    assert s.spikes.dtype == np.float32
    want = np.zeros((4, 140))
    want[0, 0] = 2
    want[1, 1] = 1
    want[2, 139] = 1
    want[2, 0] = 1
    want[3, 1] = 1
    np.testing.assert_array_equal(s.spikes[0], want)
    # sample 1: one spike at 0 s on unit 12 -> (0, 2); sample 2: no spikes
    assert s.spikes[1].sum() == 1 and s.spikes[1, 0, 2] == 1
    assert s.spikes[2].sum() == 0
    assert s.labels.tolist() == [3, 19, 0] and s.labels.dtype == np.int64
    assert s.spikes.sum() == 6 + 1


def test_shd_reader_options(shd_file):
    s = read_shd(shd_file, n_bins=2)              # spikes at 25 and 30 ms are dropped
    assert s.spikes.shape == (3, 2, 140) and s.spikes[0].sum() == 3
    s = read_shd(shd_file, pool=1, dt_ms=20.0)    # 700 channels, 20 ms bins
    assert s.spikes.shape == (3, 2, 700)
    assert s.spikes[0, 0, 0] == 1 and s.spikes[0, 0, 4] == 1 and s.spikes[0, 0, 5] == 1
    assert s.spikes[0, 1, 699] == 1 and s.spikes[0, 1, 9] == 1
    assert len(read_shd(shd_file, limit=1)) == 1
    assert read_samples(shd_file).spikes.shape == (3, 4, 140)    # by suffix


def test_shd_reader_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=np.zeros(2))
    with pytest.raises(InputError, match="spikes/times"):
        read_shd(p)
    q = tmp_path / "junk.h5"
    q.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="HDF5"):
        read_shd(q)
    r = tmp_path / "unit.h5"
    _write_shd(r, [[0.0]], [[700]], [0])
    with pytest.raises(InputError, match="unit 700"):
        read_shd(r)


def test_safetensors_sample_file_round_trip(tmp_path):
    x = np.zeros((3, 5, 4), dtype=np.uint8)
    x[0, 1, 2] = 1
    x[2, 4, 3] = 2
    p = save_samples(tmp_path / "s.safetensors", x, np.array([1, 0, 2]), {"split": "probe"})
    s = load_samples(p)
    assert s.spikes.dtype == np.float32 and s.spikes.shape == (3, 5, 4)
    np.testing.assert_array_equal(s.spikes, x)
    assert s.labels.tolist() == [1, 0, 2]
    assert s.metadata["split"] == "probe"
    from safetensors.numpy import load_file
    raw = load_file(str(p))
    assert raw["spikes"].dtype == np.uint8          # counts are stored as uint8
    assert read_samples(p).n_channels == 4


def test_safetensors_sample_file_written_by_hand(tmp_path):
    from safetensors.numpy import save_file
    p = tmp_path / "f.safetensors"
    save_file({"spikes": np.full((2, 3, 2), 0.5, dtype=np.float32)}, str(p))
    s = load_samples(p)
    assert s.labels is None and float(s.spikes.sum()) == 6.0
    bad = tmp_path / "bad.safetensors"
    save_file({"x": np.zeros((2, 3, 2), dtype=np.float32)}, str(bad))
    with pytest.raises(InputError, match="no 'spikes'"):
        load_samples(bad)
    flat = tmp_path / "flat.safetensors"
    save_file({"spikes": np.zeros((2, 3), dtype=np.float32)}, str(flat))
    with pytest.raises(InputError, match=r"\[samples, time, channels\]"):
        load_samples(flat)
    empty = tmp_path / "empty.safetensors"
    save_file({"spikes": np.zeros((0, 3, 2), dtype=np.float32)}, str(empty))
    with pytest.raises(InputError, match="empty"):
        load_samples(empty)
    mism = tmp_path / "mism.safetensors"
    save_file({"spikes": np.zeros((2, 3, 2), dtype=np.float32),
               "labels": np.zeros(3, dtype=np.int64)}, str(mism))
    with pytest.raises(InputError, match="3 labels for 2 samples"):
        load_samples(mism)
    with pytest.raises(InputError, match="not found"):
        load_samples(tmp_path / "missing.safetensors")


def test_motif_task_follows_its_spec():
    task = MotifTask()
    tpl = task.templates()
    assert tpl.shape == (8, 12)
    for k in range(8):        # each template: a permutation of the offsets 1, 4, ..., 34
        assert sorted(tpl[k].tolist()) == list(range(1, 35, 3))
        for j in range(k):     # templates agree on at most 2 channels
            assert int((tpl[k] == tpl[j]).sum()) <= 2
    x, y = task.sample(4000, seed=5)
    assert x.shape == (4000, 64, 12) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}
    assert np.bincount(y).tolist() == [500] * 8
    # about 0.9 motif spikes per channel plus 64 * 0.02 background spikes
    assert x.sum((1, 2)).mean() == pytest.approx(12 * 0.9 + 64 * 12 * 0.02, rel=0.05)
    # the same per-bin statistics for every class: the spike count per channel is the same
    per_class = np.stack([x[y == k].sum(1).mean(0) for k in range(8)])
    assert np.abs(per_class - per_class.mean(0)).max() < 0.2     # (sampling noise: ~0.05)
    x2, y2 = task.sample(4000, seed=5)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)      # seeded
    with pytest.raises(ValueError):
        MotifTask(bins=40)
