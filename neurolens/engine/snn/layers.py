"""The building blocks of the spiking networks: a delayed synaptic projection and a LIF neuron.

Our own code (written from the algorithm in METHODS.md section 6; nothing copied from the paper's
repository or the ``dcls`` package).

Time-major everywhere: tensors are ``[batch, time, channels]`` (time bins play the role tokens
play for a language model), so the engine's hooks see every site as ``[batch, seq, width]``.

:class:`DelayedProjection`: every synapse ``i -> j`` has a weight ``w[j, i]`` and a delay
``d[j, i]`` in bins (``0 <= d <= K - 1``). The layer is one ``conv1d`` over time whose kernel for
the synapse is ``w`` times a normalised Gaussian over the ``K`` taps centred at tap ``K - 1 - d``
(width ``sigma``). The input is padded with ``K - 1`` zeros on the left and ``(K - 1) // 2`` on
the right, so the convolution is causal and the output is ``(K - 1) // 2`` bins longer than the
input: ``out[t] = sum_i w[j, i] x_i[t - d[j, i]]`` for integer delays. (METHODS.md writes the
delay as a tap position ``P = (K - 1) / 2 - d``; storing ``d`` is the same parametrisation.)
``sigma = 0`` (evaluation, export, fixed delays) uses one-hot kernels at the rounded delays.

:class:`LIF`: ``H[t] = V[t-1] - V[t-1] / tau + X[t]`` (the input is not decayed), spike
``S[t] = H[t] >= threshold``, hard reset ``V[t] = H[t] (1 - S[t])`` with the reset detached from
the graph; the backward pass of the step function is the ATan surrogate
``alpha / 2 / (1 + (pi / 2 * alpha * x)^2)``. A readout LIF never spikes (``V = H``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DELAY_MODES = ("learned", "fixed", "none")


class ATanSpike(torch.autograd.Function):
    """Heaviside step forward; the derivative of ``atan(pi / 2 * alpha * x) / pi + 1 / 2``
    backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi / 2 * a * x) ** 2), None


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons over a time-major input ``[batch, time, n]``.

    Returns ``(spikes, membrane)``: the spikes (None for a readout, which never spikes) and the
    membrane potential ``H`` before the reset, both ``[batch, time, n]``."""

    def __init__(self, tau: float = 1.005, threshold: float = 1.0, alpha: float = 5.0,
                 spiking: bool = True):
        super().__init__()
        self.tau, self.threshold, self.alpha, self.spiking = tau, threshold, alpha, spiking

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        keep = 1.0 - 1.0 / self.tau
        v = torch.zeros_like(x[:, 0])
        hs, ss = [], []
        for xt in x.unbind(1):      # (unbind: one backward node, not one per time step)
            h = v * keep + xt
            hs.append(h)
            if self.spiking:
                s = ATanSpike.apply(h - self.threshold, self.alpha)
                ss.append(s)
                v = h * (1.0 - s.detach())
            else:
                v = h
        mem = torch.stack(hs, 1)
        return (torch.stack(ss, 1) if self.spiking else None), mem

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, threshold={self.threshold}, alpha={self.alpha}, "
                f"spiking={self.spiking}")


def gaussian_taps(delay: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """``[..., K]``: per synapse a normalised Gaussian over the taps centred at tap
    ``K - 1 - delay`` (``sigma > 0``)."""
    taps = torch.arange(kernel_size, dtype=delay.dtype, device=delay.device)
    centre = (kernel_size - 1) - delay
    # exp(-z^2 / 2) / sum(...) as a softmax: no underflow to 0 / 0 for a narrow sigma
    return torch.softmax(-0.5 * ((taps - centre[..., None]) / sigma) ** 2, -1)


def onehot_taps(delay: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``[..., K]``: one-hot at tap ``K - 1 - round(delay)`` (delays clamped to ``0..K-1``)."""
    d = integer_delays(delay, kernel_size)
    return F.one_hot((kernel_size - 1) - d, kernel_size).to(delay.dtype)


def integer_delays(delay: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Delays rounded to whole bins and clamped to ``0..K-1`` (long)."""
    return torch.round(delay.detach()).clamp(0, kernel_size - 1).long()


class DelayedProjection(nn.Module):
    """Synapses with a weight and a delay each; ``[batch, T, n_in] -> [batch, T + (K-1)//2,
    n_out]`` (see the module docstring). ``mode``: ``learned`` (delays are parameters),
    ``fixed`` (random integer delays, frozen) or ``none`` (a plain linear projection, K = 1)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int = 37, mode: str = "learned"):
        super().__init__()
        if mode not in DELAY_MODES:
            raise ValueError(f"unknown delay mode {mode!r} (choose from {DELAY_MODES})")
        if mode == "none":
            kernel_size = 1
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd and >= 1, got {kernel_size}")
        self.n_in, self.n_out, self.kernel_size, self.mode = n_in, n_out, kernel_size, mode
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        bound = math.sqrt(1.0 / n_in)       # PyTorch's default for conv / linear layers
        nn.init.uniform_(self.weight, -bound, bound)
        d = torch.zeros(n_out, n_in)
        if mode == "learned":
            self.delay = nn.Parameter(d)
        else:
            self.register_buffer("delay", d)
        #: Gaussian width in bins while training learned delays; 0 = one-hot (rounded) kernels
        self.sigma = 0.0

    @property
    def max_delay(self) -> int:
        return self.kernel_size - 1

    @property
    def pad(self) -> tuple[int, int]:
        return self.kernel_size - 1, (self.kernel_size - 1) // 2

    def init_delays(self, generator: torch.Generator | None = None) -> None:
        """Random delays: uniform in ``[0, K-1]`` (learned) or uniform integers (fixed)."""
        with torch.no_grad():
            if self.mode == "learned":
                self.delay.uniform_(0, self.max_delay, generator=generator)
            elif self.mode == "fixed":
                self.delay.copy_(torch.randint(0, self.kernel_size, self.delay.shape,
                                               generator=generator).float())

    def uses_gaussian(self) -> bool:
        return self.mode == "learned" and self.training and self.sigma > 0

    def taps(self, delay: torch.Tensor | None = None) -> torch.Tensor:
        """``[n_out, n_in, K]`` tap profiles (without the weight)."""
        d = self.delay if delay is None else delay
        if self.uses_gaussian():
            return gaussian_taps(d, self.kernel_size, self.sigma)
        return onehot_taps(d, self.kernel_size)

    def kernel(self, weight: torch.Tensor | None = None,
               delay: torch.Tensor | None = None) -> torch.Tensor:
        """``[n_out, n_in, K]`` conv1d kernel: ``w * taps``."""
        w = self.weight if weight is None else weight
        return w[..., None] * self.taps(delay)

    def integer_delays(self) -> torch.Tensor:
        return integer_delays(self.delay, self.kernel_size)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "none" and kernel is None:
            return F.linear(x, self.weight)
        k = self.kernel() if kernel is None else kernel
        xt = F.pad(x.transpose(1, 2), self.pad)
        return F.conv1d(xt, k).transpose(1, 2)

    def clamp_delays(self) -> None:
        with torch.no_grad():
            self.delay.clamp_(0, self.max_delay)

    def extra_repr(self) -> str:
        return f"{self.n_in} -> {self.n_out}, kernel {self.kernel_size}, delays {self.mode}"
