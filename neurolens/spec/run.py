"""Run settings as data: what a run of a language model (generation) or a diffusion pipeline
(denoising) does, and the request a front-end hands to the engine's worker.

The CLI builds these from its flags, the GUI from its form, sessions store their JSON, the bench
and the trainers pass them to the engine. Pure data: no torch, no Qt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from neurolens.errors import InputError
from neurolens.spec.edits import EditSet


@dataclass
class GenerationParams:
    """Decoding of a language model: greedy unless ``do_sample``."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()          # stop once a row's new text contains one of these
    row_stop: tuple[tuple[str, ...], ...] | None = None   # per prompt, added to ``stop``
    batch_size: int = 16
    ignore_eos: bool = False            # keep going past end-of-text (benchmarks, long runs)

    def check(self) -> GenerationParams:
        if self.max_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 0")
        if self.batch_size < 1:
            raise InputError("batch_size must be >= 1")
        if self.do_sample and not self.temperature > 0:
            raise InputError("temperature must be > 0 when sampling")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise InputError("top_k must be >= 0 and top_p in (0, 1]")
        return self

    def to_json(self) -> dict:
        """The settings a session keeps (per-prompt stops belong to the prompts, not here)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "row_stop"}
        d["stop"] = list(self.stop)
        d["sample"] = d.pop("do_sample")      # the session files' name since format 1
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GenerationParams:
        """Tolerant of missing keys and of other keys in the same object (a session's
        ``generation`` also holds the GUI's own choices)."""
        base = cls()
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = "sample" if f.name == "do_sample" else f.name
            if key in d and f.name != "row_stop":
                v = d[key]
                kw[f.name] = tuple(v) if f.name == "stop" else type(getattr(base, f.name))(v)
        return cls(**kw)


@dataclass
class DenoiseParams:
    """Denoising of a diffusion pipeline: one seed per prompt, ``seed, seed + 1, ...``."""

    steps: int = 20
    guidance: float = 3.0
    seed: int = 0

    def check(self) -> DenoiseParams:
        if self.steps < 1:
            raise InputError("steps must be >= 1")
        if self.guidance < 0:
            raise InputError("guidance must be >= 0")
        return self

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One run as a front-end asks for it: prompts (with the set each comes from), the sites
    to stream, the settings of either family, the edits. Immutable: built on the GUI thread,
    executed by the worker."""

    prompts: tuple[str, ...]
    set_names: tuple[str, ...]
    site_kinds: tuple[str, ...] = ("mlp.hook_post",)
    generation: GenerationParams = field(default_factory=GenerationParams)
    denoise: DenoiseParams = field(default_factory=DenoiseParams)
    edits: EditSet | None = None
    run_id: int = 0
    answers: tuple = ()              # expected answer per prompt (None where unknown)
