"""The feed-forward spiking network and its config (the ``config.json`` of an SNN folder).

Hidden block: delayed projection -> batch norm over time -> LIF -> dropout (one mask for every
time step, training only). Readout block: delayed projection -> LIF that never spikes; its
membrane potential is the readout. Prediction: argmax over classes of the sum over time of the
softmax of the readout membrane potential.

Every block has two hook points (identity modules) the engine hooks: ``hook_spikes`` (the
spikes ``[batch, time, n]``, hidden blocks only; an edit there changes what the next layer
receives) and ``hook_v`` (the membrane potential before the reset; for the readout it is what the
prediction is computed from).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from neurolens.engine.snn.layers import DELAY_MODES, LIF, DelayedProjection
from neurolens.errors import LoadError

MODEL_TYPE = "neurolens-snn"
CONFIG_FORMAT = 1


@dataclass
class SNNConfig:
    """Architecture of a spiking network (``config.json``)."""

    n_in: int = 12
    layer_sizes: list[int] = field(default_factory=lambda: [64, 8])   # hidden..., readout
    kernel_size: int = 37          # taps of the delayed projections: max delay K - 1 bins
    delays: str = "learned"        # learned | fixed | none (how the model was trained)
    time_step_ms: float = 10.0     # one time bin
    tau: float = 1.005             # LIF time constant in bins
    threshold: float = 1.0
    surrogate_alpha: float = 5.0   # ATan surrogate gradient
    dropout: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    class_names: list[str] | None = None
    task: dict | None = None       # the synthetic task's parameters (demo models)

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes)

    @property
    def n_out(self) -> int:
        return self.layer_sizes[-1]

    @property
    def effective_kernel(self) -> int:
        return 1 if self.delays == "none" else self.kernel_size

    def check(self) -> SNNConfig:
        def bad(msg):
            raise LoadError(f"SNN config: {msg}")
        if not isinstance(self.n_in, int) or self.n_in < 1:
            bad(f"n_in must be a positive integer, got {self.n_in!r}")
        if (not isinstance(self.layer_sizes, list) or not self.layer_sizes
                or not all(isinstance(n, int) and n > 0 for n in self.layer_sizes)):
            bad(f"layer_sizes must be a non-empty list of positive integers, "
                f"got {self.layer_sizes!r}")
        if self.delays not in DELAY_MODES:
            bad(f"delays must be one of {', '.join(DELAY_MODES)}, got {self.delays!r}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 \
                or self.kernel_size % 2 == 0:
            bad(f"kernel_size must be an odd positive integer, got {self.kernel_size!r}")
        if not self.tau >= 1.0:
            bad(f"tau must be >= 1 (bins), got {self.tau!r}")
        if not self.threshold > 0:
            bad(f"threshold must be > 0, got {self.threshold!r}")
        if self.class_names is not None and len(self.class_names) != self.n_out:
            bad(f"{len(self.class_names)} class names for {self.n_out} outputs")
        return self

    def to_json(self) -> dict:
        return {"model_type": MODEL_TYPE, "format": CONFIG_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> SNNConfig:
        if d.get("model_type") != MODEL_TYPE:
            raise LoadError(f"not a neurolens SNN config (model_type {d.get('model_type')!r})")
        known = {f.name for f in fields(cls)}
        extra = set(d) - known - {"model_type", "format"}
        if extra:
            raise LoadError(f"SNN config: unknown field(s) {sorted(extra)}")
        return cls(**{k: v for k, v in d.items() if k in known}).check()

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


class HookPoint(nn.Module):
    """Identity; the engine hooks its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, cfg: SNNConfig, readout: bool):
        super().__init__()
        self.readout = readout
        self.proj = DelayedProjection(n_in, n_out, cfg.kernel_size, cfg.delays)
        self.bn = None if readout else nn.BatchNorm1d(n_out, eps=cfg.bn_eps,
                                                      momentum=cfg.bn_momentum)
        self.lif = LIF(cfg.tau, cfg.threshold, cfg.surrogate_alpha, spiking=not readout)
        self.hook_v = HookPoint()
        self.hook_spikes = None if readout else HookPoint()
        self.dropout = 0.0 if readout else cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj(x)
        if self.bn is not None:
            z = self.bn(z.transpose(1, 2)).transpose(1, 2)
        s, v = self.lif(z)
        v = self.hook_v(v)
        if self.readout:
            return v
        s = self.hook_spikes(s)
        if self.training and self.dropout > 0:   # one mask for every time step
            keep = 1.0 - self.dropout
            mask = torch.bernoulli(torch.full((s.shape[0], 1, s.shape[2]), keep,
                                              device=s.device)) / keep
            s = s * mask
        return s


class SpikingNet(nn.Module):
    """``[batch, time, n_in]`` spikes -> readout membrane potential ``[batch, time', n_out]``
    (``time' = time + n_layers * (K - 1) // 2``)."""

    def __init__(self, cfg: SNNConfig):
        super().__init__()
        self.cfg = cfg.check()
        sizes = [cfg.n_in] + list(cfg.layer_sizes)
        self.layers = nn.ModuleList(
            Block(a, b, cfg, readout=(i == len(sizes) - 2))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return x

    def projections(self) -> list[DelayedProjection]:
        return [b.proj for b in self.layers]

    def set_sigma(self, sigma: float) -> None:
        for p in self.projections():
            p.sigma = float(sigma)

    def init_delays(self, generator: torch.Generator | None = None) -> None:
        for p in self.projections():
            p.init_delays(generator)

    def round_delays(self) -> None:
        """Delays to whole bins (what evaluation uses; export stores them so)."""
        with torch.no_grad():
            for p in self.projections():
                if p.mode != "none":
                    p.delay.copy_(p.integer_delays().to(p.delay.dtype))


def class_scores(v: torch.Tensor) -> torch.Tensor:
    """``[batch, classes]``: the softmax over classes of the readout membrane at every time
    step, summed over time (the prediction is its argmax)."""
    return torch.softmax(v, -1).sum(1)


WEIGHTS_NAME = "model.safetensors"


def save_network(net: SpikingNet, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (delays rounded to whole bins) into
    ``folder`` (created)."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net.cfg.save(folder / "config.json")
    state = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu().contiguous()
        if k.endswith("proj.delay"):
            v = torch.round(v).clamp_min(0)
        state[k] = v.clone()
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt",
                                                           "model_type": MODEL_TYPE})
    return folder


def is_snn_folder(folder: str | Path) -> bool:
    p = Path(folder) / "config.json"
    try:
        return json.loads(p.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def load_network(folder: str | Path) -> SpikingNet:
    """Build the network of an SNN folder and load its weights (LoadError names what is
    wrong)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = Path(folder)
    try:
        d = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise LoadError(f"{folder}/config.json is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise LoadError(f"{folder}/config.json: expected a JSON object")
    try:
        cfg = SNNConfig.from_json(d)
    except TypeError as e:
        raise LoadError(f"{folder}/config.json: {e}") from None
    net = SpikingNet(cfg)
    wpath = folder / WEIGHTS_NAME
    if not wpath.is_file():
        raise LoadError(f"{folder} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise LoadError(f"{wpath} is corrupt ({str(e).splitlines()[0][:200]})") from None
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise LoadError(f"{wpath} does not match config.json (missing: "
                        f"{', '.join(missing[:4]) or '-'}; unexpected: "
                        f"{', '.join(extra[:4]) or '-'})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise LoadError(f"{wpath}: {k} has shape {tuple(v.shape)}, config.json needs "
                            f"{tuple(own[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise LoadError(f"{wpath}: {k} has non-finite values")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    for p in net.projections():
        if p.mode != "none":
            dl = p.delay
            if (dl < 0).any() or (dl > p.max_delay).any():
                raise LoadError(f"{wpath}: delays outside 0..{p.max_delay} bins")
    return net.eval()
