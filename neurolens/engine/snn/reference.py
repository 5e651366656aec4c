"""A numpy-only reference forward of a spiking network exported as a portable ``.npz``
(:func:`neurolens.engine.snn.portable.save_npz`; docs/snn.md writes out the maths).

Nothing here imports torch or neurolens' engine: copy this file next to a ``.npz`` and it runs
with numpy alone. ``np.load(path, allow_pickle=False)`` reads the file (no pickled objects).

Keys of the ``.npz`` (``L`` layers, the last one the readout):

- ``format`` ("neurolens.snn.npz/1"), ``n_layers``, ``kernel_size`` (taps ``K``; the output of a
  layer is ``(K - 1) // 2`` bins longer than its input), ``tau``, ``threshold``,
  ``time_step_ms``, ``class_names``;
- per layer ``l``: ``layers.{l}.weight`` ``[n_out, n_in]`` float32, ``layers.{l}.delay``
  ``[n_out, n_in]`` int64 (whole bins, ``0 .. K - 1``); for a hidden layer its batch norm
  ``layers.{l}.bn_mean``, ``bn_var``, ``bn_weight``, ``bn_bias`` ``[n_out]`` and ``bn_eps``.
"""

from __future__ import annotations

import numpy as np

FORMAT = "neurolens.snn.npz/1"


def load(path) -> dict:
    """The arrays of a portable ``.npz`` (no pickle)."""
    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    if str(d.get("format")) != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    return d


def delayed_projection(x: np.ndarray, w: np.ndarray, d: np.ndarray, kernel_size: int
                       ) -> np.ndarray:
    """``x`` ``[n, T, n_in]`` -> ``z`` ``[n, T + (K - 1) // 2, n_out]`` with
    ``z[:, t, j] = sum_i w[j, i] * x[:, t - d[j, i], i]`` (zero outside ``0 .. T - 1``)."""
    n, t_in, _ = x.shape
    t_out = t_in + (kernel_size - 1) // 2
    z = np.zeros((n, t_out, w.shape[0]), dtype=np.float64)
    for k in np.unique(d):
        wk = np.where(d == k, w, 0.0)                   # the synapses with delay k
        span = min(t_in, t_out - int(k))
        if span > 0:
            z[:, k:k + span] += x[:, :span] @ wk.T
    return z


def lif(z: np.ndarray, tau: float, threshold: float, spiking: bool
        ) -> tuple[np.ndarray | None, np.ndarray]:
    """``H[t] = V[t-1] (1 - 1/tau) + z[t]``; spike ``S[t] = H[t] >= threshold``; hard reset
    ``V[t] = H[t] (1 - S[t])`` (a readout never spikes: ``V = H``). Returns ``(S, H)``."""
    keep = 1.0 - 1.0 / tau
    v = np.zeros(z[:, 0].shape, dtype=z.dtype)
    hs, ss = np.empty_like(z), np.empty_like(z)
    for t in range(z.shape[1]):
        h = v * keep + z[:, t]
        hs[:, t] = h
        if spiking:
            s = (h >= threshold).astype(z.dtype)
            ss[:, t] = s
            v = h * (1.0 - s)
        else:
            v = h
    return (ss if spiking else None), hs


def forward(p: dict, x: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Spikes ``[n, T, n_in]`` -> ``(predictions [n], per layer {"v": H, "spikes": S})``.
    The prediction is the argmax over classes of the sum over time of the softmax of the
    readout's membrane potential."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    n_layers, k = int(p["n_layers"]), int(p["kernel_size"])
    tau, thr = float(p["tau"]), float(p["threshold"])
    trace = []
    for l in range(n_layers):
        pre = f"layers.{l}."
        z = delayed_projection(x, p[pre + "weight"].astype(np.float64), p[pre + "delay"], k)
        readout = l == n_layers - 1
        if not readout:
            scale = p[pre + "bn_weight"] / np.sqrt(p[pre + "bn_var"] + float(p[pre + "bn_eps"]))
            z = (z - p[pre + "bn_mean"]) * scale + p[pre + "bn_bias"]
        s, h = lif(z, tau, thr, spiking=not readout)
        trace.append({"v": h, "spikes": s})
        x = s
    v = trace[-1]["v"]
    e = np.exp(v - v.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    return probs.sum(1).argmax(1), trace
