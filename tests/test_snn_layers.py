"""The spiking network's building blocks against references the code does not control: a
per-synapse shift and weighted sum written as plain loops, membrane traces computed by hand,
and the one-hot kernel as the sigma -> 0 limit of the Gaussian kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurolens.engine.snn.layers import LIF, DelayedProjection, gaussian_taps, onehot_taps


def _reference_delayed_sum(x: np.ndarray, w: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """out[b, t, j] = sum_i w[j, i] * x[b, t - d[j, i], i], for t in 0 .. T + (K-1)//2 - 1;
    plain Python loops over plain floats."""
    batch, n_t, n_in = x.shape
    n_out = w.shape[0]
    n_t_out = n_t + (k - 1) // 2
    out = np.zeros((batch, n_t_out, n_out))
    for b in range(batch):
        for t in range(n_t_out):
            for j in range(n_out):
                acc = 0.0
                for i in range(n_in):
                    src = t - int(d[j, i])
                    if 0 <= src < n_t:
                        acc += float(w[j, i]) * float(x[b, src, i])
                out[b, t, j] = acc
    return out


@pytest.mark.parametrize("mode", ["learned", "fixed"])
def test_integer_delays_equal_a_shift_and_weighted_sum(mode):
    torch.manual_seed(0)
    k = 7
    proj = DelayedProjection(3, 4, kernel_size=k, mode=mode).eval()
    rng = np.random.default_rng(1)
    d = rng.integers(0, k, size=(4, 3))
    d[0, 0], d[1, 1] = 0, k - 1            # both ends of the kernel
    with torch.no_grad():
        proj.delay.copy_(torch.from_numpy(d).float())
    x = rng.random((2, 10, 3)).astype(np.float32) * (rng.random((2, 10, 3)) < 0.5)
    got = proj(torch.from_numpy(x)).detach().numpy()
    want = _reference_delayed_sum(x, proj.weight.detach().numpy(), d, k)
    assert got.shape == want.shape == (2, 10 + 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_learned_delays_round_to_whole_bins_in_evaluation():
    proj = DelayedProjection(2, 2, kernel_size=5).eval()
    with torch.no_grad():
        proj.delay.copy_(torch.tensor([[0.4, 1.6], [3.2, 2.7]]))
    assert proj.integer_delays().tolist() == [[0, 2], [3, 3]]
    x = torch.zeros(1, 6, 2)
    x[0, 0, 0] = 1.0                      # one spike on input 0 at t = 0
    y = proj(x)[0]
    w = proj.weight.detach()
    # neuron 0 hears input 0 after 0 bins, neuron 1 after 3 bins
    assert torch.allclose(y[:, 0], torch.tensor([w[0, 0], 0, 0, 0, 0, 0, 0, 0]))
    assert torch.allclose(y[:, 1], torch.tensor([0, 0, 0, w[1, 0], 0, 0, 0, 0]))


def test_no_delay_projection_is_a_plain_linear_map():
    proj = DelayedProjection(3, 2, kernel_size=9, mode="none")
    assert proj.kernel_size == 1
    x = torch.rand(2, 5, 3)
    y = proj(x)
    assert torch.allclose(y, x @ proj.weight.detach().T, atol=1e-6)
    assert y.shape == (2, 5, 2)


def test_gaussian_kernel_tends_to_the_one_hot_kernel():
    k = 9
    d = torch.tensor([[0.0, 1.0, 4.2], [7.9, 8.0, 3.6]])   # no .5: the nearest tap is unique
    onehot = onehot_taps(d, k)
    assert onehot[0, 0].tolist() == [0] * 8 + [1]          # delay 0: the last tap
    assert onehot[1, 1].tolist() == [1] + [0] * 8          # delay K-1: the first tap
    for sigma in (0.05, 0.01):
        g = gaussian_taps(d, k, sigma)
        assert torch.allclose(g, onehot, atol=1e-6)
    wide = gaussian_taps(d, k, 2.0)
    assert torch.allclose(wide.sum(-1), torch.ones(2, 3))  # normalised
    # the layer: training with a narrow Gaussian equals evaluation with one-hot kernels
    proj = DelayedProjection(3, 2, kernel_size=k)
    with torch.no_grad():
        proj.delay.copy_(d)
    x = torch.rand(1, 12, 3)
    proj.train()
    proj.sigma = 0.01
    y_train = proj(x)
    proj.eval()
    assert torch.allclose(y_train, proj(x), atol=1e-6)


def test_gaussian_kernel_is_centred_at_the_delay():
    g = gaussian_taps(torch.tensor([2.0]), 9, 1.0)[0]
    assert int(g.argmax()) == 8 - 2
    e = math.exp(-0.5)
    # taps 0..8, centre 6: distances 6, 5, 4, 3, 2, 1, 0, 1, 2
    z = 1 + 2 * e + 2 * math.exp(-2) + math.exp(-4.5) + math.exp(-8) + math.exp(-12.5) \
        + math.exp(-18)
    # taps 6 +- 1 by hand: e^{-1/2} / Z
    assert float(g[5]) == pytest.approx(e / z, rel=1e-6)
    assert float(g[6]) == pytest.approx(1 / z, rel=1e-6)


def test_lif_membrane_trace_by_hand():
    # tau 2 bins: H = V - V / 2 + X = 0.5 V + X; threshold 1; hard reset to 0
    lif = LIF(tau=2.0, threshold=1.0)
    x = torch.tensor([[[0.6, 1.0], [0.6, 0.5], [0.2, 0.8], [1.5, 0.3], [0.0, 0.9]]])
    s, v = lif(x)
    # neuron 0: 0.6; 0.3 + 0.6 = 0.9; 0.45 + 0.2 = 0.65; 0.325 + 1.5 = 1.825 (spike, reset);
    #           0 + 0 = 0
    # neuron 1: 1.0 (spike: H >= 1); 0 + 0.5 = 0.5; 0.25 + 0.8 = 1.05 (spike); 0 + 0.3 = 0.3;
    #           0.15 + 0.9 = 1.05 (spike)
    want_v = [[0.6, 1.0], [0.9, 0.5], [0.65, 1.05], [1.825, 0.3], [0.0, 1.05]]
    want_s = [[0, 1], [0, 0], [0, 1], [1, 0], [0, 1]]
    assert torch.allclose(v[0], torch.tensor(want_v), atol=1e-6)
    assert s[0].tolist() == want_s


def test_lif_with_the_papers_tau_is_nearly_memoryless():
    lif = LIF()                      # tau 1.005 bins: V keeps 1 - 1/1.005 = 0.004975124 of itself
    x = torch.tensor([[[0.7], [0.5], [0.0]]])
    s, v = lif(x)
    assert v[0, :, 0].tolist() == pytest.approx([0.7, 0.503482587, 0.002504888], abs=1e-7)
    assert s.sum() == 0


def test_readout_never_spikes_and_integrates():
    lif = LIF(tau=2.0, threshold=1.0, spiking=False)
    s, v = lif(torch.tensor([[[1.0], [2.0], [0.0]]]))
    assert s is None
    assert v[0, :, 0].tolist() == pytest.approx([1.0, 2.5, 1.25])


def test_atan_surrogate_gradient_by_hand():
    lif = LIF(tau=2.0, threshold=1.0, alpha=5.0)
    x = torch.tensor([[[1.0, 0.6]]], requires_grad=True)    # one time step
    s, _ = lif(x)
    s.sum().backward()
    # alpha / 2 / (1 + (pi / 2 * alpha * (h - 1))^2): h - 1 = 0 -> 2.5; h - 1 = -0.4 -> 2.5 /
    # (1 + pi^2)
    assert x.grad[0, 0].tolist() == pytest.approx([2.5, 2.5 / (1 + math.pi ** 2)], rel=1e-6)


def test_reset_is_detached_from_the_graph():
    lif = LIF(tau=2.0, threshold=1.0)
    x = torch.tensor([[[1.2], [0.0]]], requires_grad=True)
    _, v = lif(x)
    v[0, 1, 0].backward()      # H1 = 0.5 * H0 * (1 - S0) with S0 detached: dH1/dx0 = 0.5 * 0
    assert float(x.grad[0, 0, 0]) == 0.0
