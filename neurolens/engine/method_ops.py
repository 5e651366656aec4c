"""Engine side of the paper-method ops: adjust (Neuron Adjust), gate (Key Space Detection) and
topk (statistical top-k). Conditional edits: hooks only, never baked into weights."""

from __future__ import annotations

from statistics import NormalDist

import torch

from neurolens.engine.hooks import RunState
from neurolens.engine.ops import in_steps, position_mask, register


def stat_threshold(x: torch.Tensor, z: float) -> torch.Tensor:
    """theta = mean + std * z over the last dimension (population std).

    Two fast reductions (the mean and the L2 norm) instead of a Welford pass, which is about
    ten times slower on CPU; var = E[x^2] - mean^2 in float32 is accurate while |mean| is not
    orders of magnitude above std (activations are near-centred; a test bounds the error)."""
    d = x.shape[-1]
    mean = x.mean(-1, keepdim=True)
    sq = torch.linalg.vector_norm(x, 2, -1, keepdim=True)
    var = (sq * sq).div_(d).sub_(mean * mean).clamp_min_(0.0)
    return mean.add_(var.sqrt_(), alpha=z)


def stat_topk(x: torch.Tensor, z: float, variant: str = "soft",
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Statistical top-k of ``x`` over its last dimension without sorting: soft (x - theta)+ or
    hard x * [x > theta]; one pass to write the result (``out`` may be ``x``: in place)."""
    th = stat_threshold(x, z)
    if variant == "soft":
        return torch.sub(x, th, out=out).clamp_min_(0.0) if out is not None else \
            torch.sub(x, th).clamp_min_(0.0)
    return torch.mul(x, x > th, out=out) if out is not None else x * (x > th)


@register("adjust", kinds=("lm",))
class AdjustHandler:
    def __init__(self, op, ref, ctx):
        self.op = op
        self.gen: torch.Generator | None = None
        self._t: dict = {}

    def _tensors(self, device):
        t = self._t.get(device)
        if t is None:
            op = self.op
            t = self._t[device] = tuple(torch.as_tensor(a, dtype=torch.float32, device=device)
                                        for a in (op.mean_f, op.std_f, op.mean_r, op.std_r)) + (
                torch.tensor(op.neurons, dtype=torch.long, device=device),)
        return t

    def __call__(self, x: torch.Tensor, state: RunState):
        if not in_steps(self.op, state):
            return None
        mf, sf, mr, sr, idx = self._tensors(x.device)
        if self.gen is None or self.gen.device != x.device:
            self.gen = torch.Generator(device=x.device).manual_seed(int(self.op.seed))
        cur = x[..., idx].float()
        zf = (cur - mf) / sf
        zr = (cur - mr) / sr
        log_pf = -0.5 * zf * zf - torch.log(sf)
        log_pr = -0.5 * zr * zr - torch.log(sr)
        prob = torch.sigmoid(log_pf - log_pr)           # p_f / (p_f + p_r)
        u = torch.rand(cur.shape, generator=self.gen, device=x.device)
        replace = (log_pf >= log_pr) & (u < prob)
        mask = position_mask(self.op.positions, state, x.device)
        if mask is not None:
            replace &= mask[..., None]
        new = torch.where(replace, mr - (sr / sf) * (cur - mf), cur)
        x[..., idx] = new.to(x.dtype)
        return x


@register("gate", kinds=("lm",))
class GateHandler:
    """Flags rows whose last-token vector lies inside the cube; the runner abstains for them."""

    reports = True     # its flags are per-run results: a forward must not stop before it

    def __init__(self, op, ref, ctx):
        self.op = op
        self._t: dict = {}

    def __call__(self, x: torch.Tensor, state: RunState):
        if not in_steps(self.op, state):
            return None
        t = self._t.get(x.device)
        if t is None:
            mu = torch.as_tensor(self.op.mu, dtype=torch.float32, device=x.device)
            half = torch.as_tensor(self.op.s, dtype=torch.float32, device=x.device) * float(
                self.op.alpha * self.op.k)
            t = self._t[x.device] = (mu, half + 1e-6 * (1 + mu.abs()))
        mu, half = t
        inside = ((x.float() - mu).abs() <= half).all(-1)      # [b, s]
        b, s = inside.shape
        check = torch.zeros_like(inside)
        gate_from = state.extra.get("gate_from")
        if state.phase == "decode":
            check[:, -1] = True
        elif gate_from is not None:
            pos = state.positions(x.device)
            check = pos >= torch.as_tensor(gate_from, device=x.device)[:, None]
        else:
            check[:, -1] = True
        hits = (inside & check).any(-1).cpu()
        if state.active is not None and state.phase == "decode":
            hits &= state.active
        prev = state.extra.get("abstain")
        state.extra["abstain"] = hits if prev is None else (prev | hits)
        state.extra.setdefault("refusal", self.op.refusal)
        return None


@register("topk", kinds=("lm",))
class TopKHandler:
    reports = True     # realised active fractions (ctx["topk_stats"])

    def __init__(self, op, ref, ctx):
        self.op = op
        self.site = ref.name
        self.z = NormalDist().inv_cdf(1.0 - op.keep_fraction)
        self.stats = ctx.setdefault("topk_stats", {})

    def __call__(self, x: torch.Tensor, state: RunState):
        if not in_steps(self.op, state):
            return None
        d = x.shape[-1]
        xf = x.float()
        if self.op.mode == "statistical":
            theta = stat_threshold(xf, self.z)
        else:  # exact: the k-th largest value per token
            k = max(1, int(round(self.op.keep_fraction * d)))
            theta = torch.topk(xf, k, dim=-1).values[..., -1:]
            theta = torch.nextafter(theta, torch.full_like(theta, -float("inf")))
        active = xf > theta
        if self.op.variant == "soft":
            out = torch.clamp_min(xf - theta, 0.0)
        else:
            out = xf * active
        valid = state.valid(x.device)
        frac = active.float().mean(-1)
        if valid is not None:
            tot, n = float(frac[valid].sum()), int(valid.sum())
        else:
            tot, n = float(frac.sum()), frac.numel()
        acc = self.stats.setdefault(self.site, [0.0, 0])
        acc[0] += tot
        acc[1] += n
        x.copy_(out.to(x.dtype))
        return x
