"""Where an op can be written into the weights: the linear layers around a site.

A model family answers one question for export, :meth:`bake_target(weights, site)`: which
linear layer *reads* the site's values as its inputs (a FFN's down projection reads
``hook_post``) and which one *writes* them as its outputs (the up projection writes
``hook_pre_linear``), and how exactly a change of the written outputs carries through. The ops'
baking rules (registered with :func:`neurolens.engine.ops.register`) then edit the weights
through :class:`WeightView`, which hides the layout (``nn.Linear`` is ``[out, in]``, GPT-2's
``Conv1D`` ``[in, out]``) and fused layers (Phi-3's ``gate_up_proj`` holds two sites).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class WeightView:
    """A linear layer seen as ``y = W x + b`` with ``W`` ``[out, in]``; ``offset`` shifts output
    indices into a fused layer's part."""

    module: torch.nn.Module
    conv1d: bool = False
    offset: int = 0

    @property
    def w(self) -> torch.Tensor:          # [out, in] view of the stored weight
        return self.module.weight.T if self.conv1d else self.module.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    # -- the site is the layer's input ------------------------------------------------------------
    def scale_inputs(self, idx: list[int], factor: float) -> None:
        self.w[:, torch.tensor(idx)] *= factor

    def fold_inputs(self, idx: list[int], value: float) -> bool:
        """Inputs held at ``value``: their contribution moves into the bias (needs one)."""
        bias = self.bias
        if bias is None:
            return False
        j = torch.tensor(idx)
        bias += (self.w[:, j] * value).sum(1)
        self.w[:, j] *= 0.0
        return True

    def mask(self, mask: np.ndarray) -> None:
        m = torch.as_tensor(np.asarray(mask), device=self.w.device).bool()
        self.w[m] = 0.0

    # -- the site is the layer's output -----------------------------------------------------------
    def scale_outputs(self, idx: list[int], factor: float) -> None:
        j = torch.tensor(idx) + self.offset
        self.w[j, :] *= factor
        bias = self.bias
        if bias is not None:
            bias[j] *= factor


@dataclass
class BakeTarget:
    """The weights around one site. ``writes_linear``: the site *is* the writer's output (a
    scale of the rows scales the site); ``writes_zero``: zeroing the writer's rows zeroes the
    site exactly (the site is the output, or an activation with act(0) = 0 of it)."""

    reads: WeightView | None = None
    writes: WeightView | None = None
    writes_linear: bool = False
    writes_zero: bool = False
