"""Edit sets: the ``neurolens.edits/1`` format.

An :class:`EditSet` is an ordered list of edit ops. Each op names a site (or a site pattern), the
neurons it touches and the positions it acts on. Edit sets are plain data: the engine turns them
into hooks, export bakes the ones that are exact in the weights.

JSON holds the small fields; per-neuron arrays (means, stds, bounds) go into a safetensors sidecar
next to the JSON file and are referenced by key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neurolens.errors import SpecError
from neurolens.spec.sites import is_native, is_pattern, match_sites, parse_site

FORMAT = "neurolens.edits/1"

Positions = Any  # "all" | "last" | list[int]

#: what a gate op (and the demo model, when it refuses) answers instead
DEFAULT_REFUSAL = " I can't help with that."


def _check_positions(value: Any, where: str) -> Positions:
    if value in ("all", "last"):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                for v in value):
        return [int(v) for v in value]
    raise SpecError(f"{where}.positions: expected 'all', 'last' or a list of integers, "
                    f"got {value!r}")


def _check_neurons(value: Any, where: str, field: str = "neurons",
                   noun: str = "neuron") -> list[int]:
    """A non-empty list of distinct indices >= 0 (``field``: its name in messages, e.g.
    ``heads``; ``noun``: what one index counts)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"{where}.{field}: expected a non-empty list of {noun} indices, "
                        f"got {value!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SpecError(f"{where}.{field}[{i}]: expected an integer, got {v!r}")
        if v < 0:
            raise SpecError(f"{where}.{field}[{i}]: negative index {v}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise SpecError(f"{where}.{field}: duplicate indices")
    return out


def _check_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


@dataclass
class EditOp:
    """Base of all ops. Subclasses set ``op`` and add their fields."""

    op: ClassVar[str] = ""
    #: True when the op acts on one neuron linearly and position-independently, so export can
    #: fold it into the weights (given a site kind that allows it).
    linear: ClassVar[bool] = False
    #: fields a JSON edit must give
    required: ClassVar[tuple[str, ...]] = ("site",)

    site: str = ""
    positions: Positions = "all"
    enabled: bool = True
    note: str = ""
    steps: tuple[int, int] | None = None  # diffusion: denoising step window [start, stop)

    # -- serialization ---------------------------------------------------------------------
    def to_json(self, arrays: dict[str, np.ndarray], key: str) -> dict:
        d: dict[str, Any] = {"op": self.op, "site": self.site}
        for f in fields(self):
            if f.name in ("site",):
                continue
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                arrays[f"{key}.{f.name}"] = np.ascontiguousarray(v)
                d[f.name] = {"sidecar": f"{key}.{f.name}"}
            elif f.name == "positions" and v == "all":
                continue
            elif f.name == "enabled" and v is True:
                continue
            elif f.name in ("note",) and not v:
                continue
            elif f.name == "steps" and v is None:
                continue
            else:
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    # -- validation --------------------------------------------------------------------------
    def check(self, where: str) -> None:
        """Model-independent validation. Normalises fields in place."""
        if not isinstance(self.site, str) or not self.site:
            raise SpecError(f"{where}.site: expected a site name, got {self.site!r}")
        self.positions = _check_positions(self.positions, where)
        if not isinstance(self.enabled, bool):
            raise SpecError(f"{where}.enabled: expected true or false, got {self.enabled!r}")
        if not isinstance(self.note, str):
            raise SpecError(f"{where}.note: expected text, got {self.note!r}")
        if self.steps is not None:
            s = self.steps
            if (not isinstance(s, (list, tuple)) or len(s) != 2
                    or not all(isinstance(v, int) for v in s) or s[0] < 0 or s[1] <= s[0]):
                raise SpecError(f"{where}.steps: expected [start, stop) with 0 <= start < stop, "
                                f"got {s!r}")
            self.steps = (int(s[0]), int(s[1]))

    def neuron_indices(self) -> list[int] | None:
        """Neurons the op touches (None: the whole site)."""
        return getattr(self, "neurons", None)

    def describe(self) -> str:
        n = self.neuron_indices()
        who = f"{len(n)} neuron{'s' if len(n) != 1 else ''}" if n is not None else "all neurons"
        return f"{self.op} {who} at {self.site}"


@dataclass
class Prune(EditOp):
    """Zero the neurons' values."""

    op: ClassVar[str] = "prune"
    linear: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("site", "neurons")
    neurons: list[int] = field(default_factory=list)

    def __init__(self, site: str, neurons, positions: Positions = "all", enabled: bool = True,
                 note: str = "", steps=None):
        self.site, self.neurons, self.positions = site, neurons, positions
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.neurons = _check_neurons(self.neurons, where)


@dataclass
class Scale(EditOp):
    """Multiply the neurons' values by ``factor``."""

    op: ClassVar[str] = "scale"
    linear: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("site", "neurons", "factor")
    neurons: list[int] = field(default_factory=list)
    factor: float = 1.0

    def __init__(self, site: str, neurons, factor: float = 1.0, positions: Positions = "all",
                 enabled: bool = True, note: str = "", steps=None):
        self.site, self.neurons, self.factor, self.positions = site, neurons, factor, positions
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.neurons = _check_neurons(self.neurons, where)
        self.factor = _check_number(self.factor, f"{where}.factor")


@dataclass
class Set(EditOp):
    """Overwrite the neurons' values with a constant."""

    op: ClassVar[str] = "set"
    required: ClassVar[tuple[str, ...]] = ("site", "neurons", "value")
    neurons: list[int] = field(default_factory=list)
    value: float = 0.0

    def __init__(self, site: str, neurons, value: float = 0.0, positions: Positions = "all",
                 enabled: bool = True, note: str = "", steps=None):
        self.site, self.neurons, self.value, self.positions = site, neurons, value, positions
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.neurons = _check_neurons(self.neurons, where)
        self.value = _check_number(self.value, f"{where}.value")


#: op name -> class; paper-method modules register their ops here
OPS: dict[str, type[EditOp]] = {"prune": Prune, "scale": Scale, "set": Set}


def register_op(cls: type[EditOp]) -> type[EditOp]:
    OPS[cls.op] = cls
    return cls


def _op_from_json(d: Any, arrays: dict, where: str) -> EditOp:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected an object, got {type(d).__name__}")
    name = d.get("op")
    if name not in OPS:
        raise SpecError(f"{where}.op: unknown op {name!r} (known: {', '.join(sorted(OPS))})")
    cls = OPS[name]
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known - {"op"}
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {sorted(unknown)} for op '{name}'")
    for r in cls.required:
        if r not in d:
            raise SpecError(f"{where}.{r}: missing required field for op '{name}'")
    obj = cls.__new__(cls)  # skip the convenience __init__; check() validates below
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(v, dict) and set(v) == {"sidecar"}:
                if v["sidecar"] not in arrays:
                    raise SpecError(f"{where}.{f.name}: sidecar array '{v['sidecar']}' is "
                                    "missing (is the .safetensors file next to the JSON?)")
                v = arrays[v["sidecar"]]
        elif f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:  # pragma: no cover - every field has a default
            raise SpecError(f"{where}.{f.name}: missing required field")
        setattr(obj, f.name, v)
    obj.check(where)
    return obj


@dataclass
class ModelRef:
    name_or_path: str = ""
    fingerprint: str = ""


class EditSet:
    """An ordered list of edits for one model."""

    def __init__(self, edits: list[EditOp] | None = None, model: ModelRef | None = None):
        self.edits: list[EditOp] = list(edits or [])
        self.model = model or ModelRef()
        for i, e in enumerate(self.edits):
            if not isinstance(e, EditOp):
                raise SpecError(f"edits[{i}]: expected an edit op, got {type(e).__name__}")

    # -- list-like ---------------------------------------------------------------------------
    def __iter__(self):
        return iter(self.edits)

    def __len__(self) -> int:
        return len(self.edits)

    def __getitem__(self, i):
        return self.edits[i]

    def __bool__(self) -> bool:
        return any(e.enabled for e in self.edits)

    def __repr__(self) -> str:
        return f"EditSet({len(self.edits)} edits: {[e.describe() for e in self.edits]})"

    def append(self, op: EditOp) -> None:
        self.edits.append(op)

    def enabled(self) -> list[EditOp]:
        return [e for e in self.edits if e.enabled]

    def copy(self) -> EditSet:
        arrays: dict[str, np.ndarray] = {}
        d = self.to_dict(arrays)
        return EditSet.from_dict(d, {k: v.copy() for k, v in arrays.items()})

    # -- (de)serialization -------------------------------------------------------------------
    def to_dict(self, arrays: dict[str, np.ndarray]) -> dict:
        return {"format": FORMAT,
                "model": {"name_or_path": self.model.name_or_path,
                          "fingerprint": self.model.fingerprint},
                "edits": [e.to_json(arrays, f"e{i}") for i, e in enumerate(self.edits)]}

    @classmethod
    def from_dict(cls, d: Any, arrays: dict[str, np.ndarray] | None = None) -> EditSet:
        arrays = arrays or {}
        if not isinstance(d, dict):
            raise SpecError(f"edit spec: expected a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise SpecError(f"format: expected '{FORMAT}', got {fmt!r}")
        model = d.get("model") or {}
        if not isinstance(model, dict):
            raise SpecError("model: expected an object with name_or_path and fingerprint")
        edits = d.get("edits")
        if not isinstance(edits, list):
            raise SpecError("edits: expected a list of edit objects")
        ops = [_op_from_json(e, arrays, f"edits[{i}]") for i, e in enumerate(edits)]
        return cls(ops, ModelRef(str(model.get("name_or_path", "")),
                                 str(model.get("fingerprint", ""))))

    def sidecar_path(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        return p.with_name(p.name[: -len(".json")] + ".safetensors" if p.name.endswith(".json")
                           else p.name + ".safetensors")

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON (and a safetensors sidecar when an op carries arrays). Atomic."""
        from neurolens.spec.files import save_json_with_sidecar
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        d = self.to_dict(arrays)
        return save_json_with_sidecar(path, d, arrays, self.sidecar_path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EditSet:
        from neurolens.spec.files import load_json_with_sidecar
        d, arrays = load_json_with_sidecar(Path(path), "edit spec")
        return cls.from_dict(d, arrays)

    # -- validation against a model ----------------------------------------------------------
    def resolve_sites(self, op: EditOp, widths: dict[str, int], where: str) -> list[str]:
        """Concrete sites an op acts on (patterns expanded)."""
        if is_pattern(op.site):
            sites = match_sites(op.site, list(widths))
            if not sites:
                raise SpecError(f"{where}.site: pattern '{op.site}' matches no site of this model")
            return sites
        if op.site not in widths:
            hint = ""
            s = parse_site(op.site)
            if s is not None:
                n_layers = len({k.split(".")[1] for k in widths if k.startswith("blocks.")})
                hint = f" (this model has {n_layers} layers)" if n_layers else ""
            elif not is_native(op.site):
                hint = " (use a name like blocks.0.mlp.hook_post or module.path:output)"
            raise SpecError(f"{where}.site: unknown site '{op.site}'{hint}")
        return [op.site]

    def validate(self, widths: dict[str, int], fingerprint: str | None = None) -> list[str]:
        """Check sites and neuron ranges against a model; return warnings.

        ``widths`` maps every site the model has to its width (native sites are resolved by the
        engine before this is called).
        """
        warnings = []
        for i, op in enumerate(self.edits):
            where = f"edits[{i}]"
            for site in self.resolve_sites(op, widths, where):
                w = widths[site]
                n = op.neuron_indices()
                if n is not None:
                    for j, v in enumerate(n):
                        if v >= w:
                            raise SpecError(f"{where}.neurons[{j}]: index {v} out of range for "
                                            f"{site} (width {w})")
                mask = getattr(op, "mask", None)
                if op.op == "wmask" and isinstance(mask, np.ndarray) and mask.shape[1] != w:
                    raise SpecError(f"{where}.mask: width mismatch ({mask.shape[1]} columns for "
                                    f"{site} of width {w})")
                mu = getattr(op, "mu", None)
                if op.op == "gate" and isinstance(mu, np.ndarray) and mu.shape[0] != w:
                    raise SpecError(f"{where}.mu: width mismatch ({mu.shape[0]} values for "
                                    f"{site} of width {w})")
                for fname in ("mean_f", "std_f", "mean_r", "std_r"):
                    arr = getattr(op, fname, None)
                    if isinstance(arr, np.ndarray) and n is not None and arr.shape[-1] != len(n) \
                            and arr.shape[-1] != w:
                        raise SpecError(f"{where}.{fname}: width mismatch ({arr.shape[-1]} values"
                                        f" for {len(n)} neurons at {site})")
        if fingerprint and self.model.fingerprint and fingerprint != self.model.fingerprint:
            warnings.append(f"model fingerprint mismatch: edits were made for "
                            f"'{self.model.name_or_path or '?'}' ({self.model.fingerprint}), "
                            f"this model is {fingerprint}")
        return warnings


# -- paper-method ops (conditional: never baked into weights) ------------------------------------
def _check_array(value: Any, where: str, n: int | None) -> np.ndarray:
    a = np.asarray(value, dtype=np.float32)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise SpecError(f"{where}: expected {n if n is not None else 'a list of'} numbers, got "
                        f"shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise SpecError(f"{where}: contains non-finite values")
    return a


@dataclass
class Adjust(EditOp):
    """Neuron Adjust: map values that look like the forget distribution onto the retain one.

    Per selected neuron j with Gaussians N(mean_f, std_f) (forget) and N(mean_r, std_r)
    (retain): when p_f(x) >= p_r(x), with probability p_f / (p_f + p_r) replace
    x <- mean_r - (std_r / std_f) * (x - mean_f). One uniform draw per element, seeded.
    """

    op: ClassVar[str] = "adjust"
    required: ClassVar[tuple[str, ...]] = ("site", "neurons", "mean_f", "std_f", "mean_r",
                                           "std_r")
    neurons: list[int] = field(default_factory=list)
    mean_f: Any = None
    std_f: Any = None
    mean_r: Any = None
    std_r: Any = None
    seed: int = 0

    def __init__(self, site: str, neurons, mean_f, std_f, mean_r, std_r, seed: int = 0,
                 positions: Positions = "all", enabled: bool = True, note: str = "", steps=None):
        self.site, self.neurons, self.positions = site, neurons, positions
        self.mean_f, self.std_f, self.mean_r, self.std_r, self.seed = (mean_f, std_f, mean_r,
                                                                        std_r, seed)
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.neurons = _check_neurons(self.neurons, where)
        n = len(self.neurons)
        for f in ("mean_f", "std_f", "mean_r", "std_r"):
            setattr(self, f, _check_array(getattr(self, f), f"{where}.{f}", n))
        for f in ("std_f", "std_r"):
            if np.any(getattr(self, f) <= 0):
                raise SpecError(f"{where}.{f}: standard deviations must be > 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SpecError(f"{where}.seed: expected an integer, got {self.seed!r}")


@dataclass
class Gate(EditOp):
    """Key Space Detection: abstain when the last-token vector falls in the skill's hypercube
    mu +- alpha * k * s (checked at the prompt's last token and every generated token)."""

    op: ClassVar[str] = "gate"
    required: ClassVar[tuple[str, ...]] = ("site", "mu", "s", "k", "alpha")
    mu: Any = None
    s: Any = None
    k: float = 1.0
    alpha: float = 1.0
    refusal: str = DEFAULT_REFUSAL

    def __init__(self, site: str, mu, s, k: float, alpha: float = 1.0,
                 refusal: str = DEFAULT_REFUSAL, positions: Positions = "last",
                 enabled: bool = True, note: str = "", steps=None):
        self.site, self.mu, self.s, self.k, self.alpha = site, mu, s, k, alpha
        self.refusal, self.positions = refusal, positions
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.mu = _check_array(self.mu, f"{where}.mu", None)
        self.s = _check_array(self.s, f"{where}.s", self.mu.shape[0])
        if np.any(self.s < 0):
            raise SpecError(f"{where}.s: standard deviations must be >= 0")
        self.k = _check_number(self.k, f"{where}.k")
        self.alpha = _check_number(self.alpha, f"{where}.alpha")
        if self.alpha <= 0 or self.k < 0:
            raise SpecError(f"{where}.alpha: must be > 0 (and k >= 0)")
        if not isinstance(self.refusal, str):
            raise SpecError(f"{where}.refusal: expected text")

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        return f"gate (abstain, alpha {self.alpha:g}) on {self.site}"


@dataclass
class TopK(EditOp):
    """Statistical top-k (Spark): per token keep about keep_fraction of the pre-activations,
    threshold = mean + std * Phi^-1(1 - k/d); soft (g - theta)+ or hard g * [g > theta]."""

    op: ClassVar[str] = "topk"
    required: ClassVar[tuple[str, ...]] = ("site", "keep_fraction")
    keep_fraction: float = 0.08
    mode: str = "statistical"
    variant: str = "soft"

    def __init__(self, site: str, keep_fraction: float = 0.08, mode: str = "statistical",
                 variant: str = "soft", positions: Positions = "all", enabled: bool = True,
                 note: str = "", steps=None):
        self.site, self.keep_fraction, self.mode, self.variant = site, keep_fraction, mode, variant
        self.positions, self.enabled, self.note, self.steps = positions, enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        self.keep_fraction = _check_number(self.keep_fraction, f"{where}.keep_fraction")
        if not 0 < self.keep_fraction < 1:
            raise SpecError(f"{where}.keep_fraction: must be between 0 and 1")
        if self.mode not in ("statistical", "exact"):
            raise SpecError(f"{where}.mode: 'statistical' or 'exact', got {self.mode!r}")
        if self.variant not in ("soft", "hard"):
            raise SpecError(f"{where}.variant: 'soft' or 'hard', got {self.variant!r}")

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        return (f"topk {self.mode} {self.variant} keep {self.keep_fraction:.1%} at {self.site}")


@dataclass
class MaskWeights(EditOp):
    """Delete single weights of the linear layer that reads the site: W <- W * (1 - M).

    ``mask`` is ``[out_features, width]`` (1 = delete). The memorization-subspace method
    (diffusion UNet FFNs) produces it; export bakes it exactly."""

    op: ClassVar[str] = "wmask"
    linear: ClassVar[bool] = True
    required: ClassVar[tuple[str, ...]] = ("site", "mask")
    mask: Any = None

    def __init__(self, site: str, mask, enabled: bool = True, note: str = "", steps=None):
        self.site, self.mask, self.positions = site, mask, "all"
        self.enabled, self.note, self.steps = enabled, note, steps
        self.check("edit")

    def check(self, where: str) -> None:
        super().check(where)
        m = np.asarray(self.mask)
        if m.ndim != 2 or m.size == 0:
            raise SpecError(f"{where}.mask: expected a 2-D [out, in] array, got shape {m.shape}")
        if not np.all((m == 0) | (m == 1)):
            raise SpecError(f"{where}.mask: expected 0/1 values")
        self.mask = m.astype(np.uint8)
        if self.positions != "all":
            raise SpecError(f"{where}.positions: a weight mask acts on every position")

    def neuron_indices(self):
        return None

    def describe(self) -> str:
        m = self.mask
        return (f"wmask {int(m.sum())} of {m.size} weights ({m.mean():.2%}) "
                f"reading {self.site}")


OPS.update({"adjust": Adjust, "gate": Gate, "topk": TopK, "wmask": MaskWeights})
