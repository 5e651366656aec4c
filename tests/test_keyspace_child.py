"""UMAP in a child process (issue 29): the window's process never imports umap. The child's
protocol (points in and out as .npy files), its errors, cancel, its end when the parent goes,
and the window's projector keeping only the newest request. References: numpy's SVD by hand."""

import os
import sys

import numpy as np
import pytest

from neurolens.engine.keyspace import UmapProcess


def _pca_by_hand(x):
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    return u[:, :2] * s[:2]


def _same_up_to_sign(got, want):
    for k in range(2):
        col = got[:, k].astype(np.float64)
        sign = 1.0 if np.dot(col, want[:, k]) >= 0 else -1.0
        np.testing.assert_allclose(sign * col, want[:, k], atol=1e-4)


def test_child_returns_points_through_files_and_leaves_nothing():
    before = "umap" in sys.modules
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    p = UmapProcess(x)          # fewer than 5 points: the child falls back to PCA (no umap)
    folder = os.path.dirname(p._in)
    pts = p.result(timeout=60)
    assert pts.shape == (4, 2) and pts.dtype == np.float32 and p.proc.returncode == 0
    _same_up_to_sign(pts, _pca_by_hand(x))
    assert not os.path.exists(folder)
    assert ("umap" in sys.modules) == before


def test_child_error_comes_back_as_one_line():
    p = UmapProcess(np.zeros((3, 2, 2), np.float32))       # not rows: the child fails
    with pytest.raises(RuntimeError, match="ValueError"):
        p.result(timeout=60)


def test_cancel_kills_the_child_and_parent_end_stops_it():
    x = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    p = UmapProcess(x)
    folder = os.path.dirname(p._in)
    p.cancel()
    with pytest.raises(UmapProcess.Cancelled):
        p.result(timeout=60)
    assert p.proc.returncode < 0 and not os.path.exists(folder)
    # the child watches its stdin: when the parent goes (its end of the pipe closes), it exits
    q = UmapProcess(x)
    q.proc.stdin.close()
    assert q.proc.wait(timeout=60) == 3


def test_projector_keeps_only_the_newest_umap_request(qtbot):
    from neurolens.gui.worker import Projector
    proj = Projector()
    got = []
    proj.ready.connect(lambda rid, method, pts: got.append((rid, method, pts)))
    slow = np.random.default_rng(2).normal(size=(60, 8)).astype(np.float32)
    fast = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    proj.submit(1, "umap", slow)
    qtbot.waitUntil(lambda: proj.umap_running, timeout=60_000)
    first = proj._proc.proc
    proj.submit(2, "umap", fast)             # replaces the first: its child is killed
    assert first.wait(timeout=60) < 0
    qtbot.waitUntil(lambda: bool(got), timeout=60_000)
    proj.pool.waitForDone(60_000)
    qtbot.wait(50)
    assert [(rid, method) for rid, method, _ in got] == [(2, "umap")]
    _same_up_to_sign(got[0][2], _pca_by_hand(fast))
    assert not proj.umap_running
