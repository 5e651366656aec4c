"""Key-space projections for the scatter view: PCA at once, UMAP when ready. numpy (+umap).

UMAP (umap-learn, numba, llvmlite: about 0.3 GB) runs in a child process of its own
(:class:`UmapProcess`), so the window's process never imports it: the points go to the child
and come back as ``.npy`` files in a temporary folder (no pickle), and a newer request kills the
older child. The child runs this file by its path (``python -I keyspace.py IN OUT SEED NICE``):
it imports numpy and umap only, not torch or the rest of the engine. It exits when its parent
does (its stdin closes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows to 2-D with PCA (randomized range finder when wide; exact when small)."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    if n == 0:
        return np.zeros((0, 2), np.float32)
    xc = x - x.mean(0, keepdims=True)
    if n < 3:
        out = np.zeros((n, 2), np.float32)
        out[:, 0] = xc @ (xc[0] / (np.linalg.norm(xc[0]) + 1e-12)) if n > 1 else 0
        return out
    if min(n, d) <= 512:
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        return (u[:, :2] * s[:2]).astype(np.float32)
    # randomized SVD: a few passes over the data, O(n*d*k)
    rng = np.random.default_rng(0)
    k = 10
    q = xc @ rng.standard_normal((d, k)).astype(np.float32)
    for _ in range(2):
        q, _ = np.linalg.qr(q)
        q = xc @ (xc.T @ q)
    q, _ = np.linalg.qr(q)
    b = q.T @ xc
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    return ((q @ ub[:, :2]) * s[:2]).astype(np.float32)


def umap_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP embedding (slow to start: numba compiles on first use). Small n falls back to PCA."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 5:
        return pca_2d(x)
    import umap  # noqa: PLC0415 - heavy import, only when asked

    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed,
                        init="random" if n < 10 else "spectral", n_jobs=1)
    return reducer.fit_transform(x).astype(np.float32)


def child_available() -> bool:
    """Whether UMAP can run in a child process (a Python interpreter to start; not in a frozen
    bundle, where ``sys.executable`` is the app)."""
    return not getattr(sys, "frozen", False) and bool(sys.executable)


class UmapProcess:
    """:func:`umap_2d` of ``x`` in a child process. :meth:`result` waits for the points (raises
    :class:`RuntimeError` with the child's last error line when it failed, or
    :class:`Cancelled` once :meth:`cancel` was called); :meth:`cancel` kills the child."""

    class Cancelled(Exception):
        pass

    def __init__(self, x: np.ndarray, seed: int = 0, nice: int = 5):
        self._dir = tempfile.mkdtemp(prefix="neurolens-umap-")
        self._in = os.path.join(self._dir, "x.npy")
        self._out = os.path.join(self._dir, "points.npy")
        np.save(self._in, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
        self._cancelled = False
        self._lock = threading.Lock()
        self._err = os.path.join(self._dir, "stderr.txt")
        with open(self._err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__), self._in, self._out, str(seed),
                 str(nice)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self.proc.poll() is None:
                self.proc.kill()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def result(self, timeout: float | None = None) -> np.ndarray:
        try:
            self.proc.wait(timeout)     # (stdin stays open: its end tells the child to stop)
            if self._cancelled:
                raise UmapProcess.Cancelled()
            if self.proc.returncode != 0:
                with open(self._err, "rb") as f:
                    lines = [ln for ln in f.read().decode(errors="replace").splitlines()
                             if ln.strip()]
                raise RuntimeError(lines[-1] if lines else
                                   f"UMAP process exited with {self.proc.returncode}")
            return np.load(self._out, allow_pickle=False)
        finally:
            if self.proc.poll() is not None:
                self.proc.stdin.close()
                shutil.rmtree(self._dir, ignore_errors=True)


def _child(path_in: str, path_out: str, seed: int, nice: int = 0) -> None:
    """The child's side: read the points, embed, write them; exit when the parent goes."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)     # below the window and the model's worker
    def watch_parent():
        try:
            while sys.stdin.buffer.read(1):
                pass
        except (OSError, ValueError):
            pass
        os._exit(3)
    threading.Thread(target=watch_parent, daemon=True).start()
    code = 0
    try:
        pts = umap_2d(np.load(path_in, allow_pickle=False), seed=seed)
        tmp = path_out + ".part.npy"
        np.save(tmp, pts, allow_pickle=False)
        os.replace(tmp, path_out)
    except Exception as e:  # noqa: BLE001 - the parent shows the last line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    sys.stderr.flush()
    os._exit(code)     # not a normal shutdown: the watcher thread is blocked reading stdin


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

