"""The portable ``.npz`` of a spiking network (read by :mod:`neurolens.engine.snn.reference`,
numpy only): per layer the weights, whole-bin delays and batch-norm statistics, and the LIF
parameters. Written with :func:`numpy.savez` from plain arrays (loads with
``allow_pickle=False``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurolens.engine.snn.network import SpikingNet
from neurolens.engine.snn.reference import FORMAT
from neurolens.errors import InputError


def npz_arrays(net: SpikingNet) -> dict[str, np.ndarray]:
    cfg = net.cfg
    names = cfg.class_names or [str(k) for k in range(cfg.n_out)]
    d: dict[str, np.ndarray] = {
        "format": np.array(FORMAT), "n_layers": np.array(cfg.n_layers, dtype=np.int64),
        "n_in": np.array(cfg.n_in, dtype=np.int64),
        "layer_sizes": np.array(cfg.layer_sizes, dtype=np.int64),
        "kernel_size": np.array(cfg.effective_kernel, dtype=np.int64),
        "tau": np.array(cfg.tau, dtype=np.float64),
        "threshold": np.array(cfg.threshold, dtype=np.float64),
        "time_step_ms": np.array(cfg.time_step_ms, dtype=np.float64),
        "delays_mode": np.array(cfg.delays), "class_names": np.array(names)}
    for l, block in enumerate(net.layers):
        pre = f"layers.{l}."
        d[pre + "weight"] = block.proj.weight.detach().cpu().numpy().astype(np.float32)
        d[pre + "delay"] = block.proj.integer_delays().cpu().numpy().astype(np.int64)
        if block.bn is not None:
            bn = block.bn
            d[pre + "bn_mean"] = bn.running_mean.detach().cpu().numpy().astype(np.float32)
            d[pre + "bn_var"] = bn.running_var.detach().cpu().numpy().astype(np.float32)
            d[pre + "bn_weight"] = bn.weight.detach().cpu().numpy().astype(np.float32)
            d[pre + "bn_bias"] = bn.bias.detach().cpu().numpy().astype(np.float32)
            d[pre + "bn_eps"] = np.array(bn.eps, dtype=np.float64)
    return d


def save_npz(net: SpikingNet, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the network's portable ``.npz`` (atomic; an existing file only with ``force``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"the portable file must end in .npz, got {path}")
    if path.exists() and not force:
        raise InputError(f"{path} exists (use --force to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **npz_arrays(net))
    os.replace(tmp, path)
    return path
