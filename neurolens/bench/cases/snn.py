"""Spiking networks: capture of every layer vs a plain classification of the demo SNN, and the
delay layer's forward+backward against a dense ``conv1d`` of the same kernel size."""

from __future__ import annotations

from neurolens.bench.measure import Case, alternate, check


def _demo():
    from neurolens.engine.snn.model import load_snn
    from neurolens.resources import model_path
    return load_snn(model_path("demo-snn"))


def _samples(model, n: int):
    import numpy as np
    s = model.samples(model.default_samples())
    return s.subset(np.arange(min(n, len(s))))


def capture_case(batch: int, reps: int) -> Case:
    """Every site of every layer (spikes and membrane, per time bin) captured / the same
    classification without capture (one batch, the same run path)."""
    model = _demo()
    s = _samples(model, batch)
    sites = list(model.sites())

    def ours():
        cap = model.capture(s, sites, batch_size=batch)
        assert cap.store.n_rows > 0

    def plain():
        model.classify(s, batch_size=batch)

    t_ours, t_plain = alternate(ours, plain, reps)
    r = t_ours / t_plain
    return Case(f"SNN capture overhead (demo SNN, {len(s)} samples x {s.n_bins} bins, "
                f"{len(sites)} sites)", t_ours, t_plain, r, "<= 1.10", check(r, "<= 1.10"),
                detail={"reference": "classify the same batch without capture"})


def delay_layer_case(batch: int, reps: int) -> Case:
    """Forward + backward of the delay layer as it trains (learned delays, Gaussian kernels
    rebuilt from the weights and delays each step) / a dense ``conv1d`` with the same kernel
    size, padding and shapes (its kernel a plain parameter)."""
    import torch
    import torch.nn.functional as F

    from neurolens.engine.snn.layers import DelayedProjection
    model = _demo()
    cfg = model.cfg
    torch.manual_seed(0)
    layer = DelayedProjection(cfg.n_in, cfg.layer_sizes[0], cfg.kernel_size, "learned")
    layer.init_delays(torch.Generator().manual_seed(0))
    layer.train()
    layer.sigma = 0.5
    dense = torch.nn.Parameter(torch.randn(cfg.layer_sizes[0], cfg.n_in, cfg.kernel_size) * 0.1)
    x = (torch.rand(batch, 64, cfg.n_in) < 0.05).float()

    def ours():
        layer.zero_grad()
        layer(x).square().mean().backward()

    def plain():
        dense.grad = None
        y = F.conv1d(F.pad(x.transpose(1, 2), layer.pad), dense).transpose(1, 2)
        y.square().mean().backward()

    t_ours, t_plain = alternate(ours, plain, reps, warmup=2)
    return Case(f"SNN delay layer fwd+bwd ({cfg.n_in}->{cfg.layer_sizes[0]}, K "
                f"{cfg.kernel_size}, batch {batch} x 64 bins) vs dense conv1d",
                t_ours, t_plain, t_ours / t_plain, "-", None,
                detail={"note": "ratio reported, no budget: the delay layer builds its "
                                "Gaussian kernels from (w, d, sigma) each step"})


def cases(quick: bool) -> list[Case]:
    reps = 3 if quick else 9
    batch = 8 if quick else 64
    return [capture_case(batch, reps), delay_layer_case(batch, reps)]
