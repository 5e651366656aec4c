"""Session files (``neurolens.session/1``): everything a user built in the app, as data.

JSON (``*.neurolens.json``) holds the model reference, prompt sets, neuron sets, view and
generation settings and the edit list; per-neuron arrays of edits go to a safetensors sidecar
next to it (``*.neurolens.safetensors``). Pure data: no torch, no Qt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurolens.errors import SpecError
from neurolens.spec.edits import EditSet

FORMAT = "neurolens.session/1"


@dataclass
class Session:
    model: str = ""
    prompts: list[tuple[str, str]] = field(default_factory=list)        # (set name, prompt)
    typed_prompt: str = ""
    neuron_sets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    edits: EditSet = field(default_factory=EditSet)
    view: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, arrays: dict[str, np.ndarray]) -> dict:
        return {"format": FORMAT, "model": self.model,
                "prompts": [[s, p] for s, p in self.prompts], "typed_prompt": self.typed_prompt,
                "neuron_sets": {k: [[s, int(i)] for s, i in v]
                                for k, v in self.neuron_sets.items()},
                "edits": self.edits.to_dict(arrays), "view": self.view,
                "generation": self.generation}

    @classmethod
    def from_dict(cls, d: Any, arrays: dict[str, np.ndarray]) -> Session:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SpecError(f"format: expected '{FORMAT}'")
        try:
            prompts = [(str(s), str(p)) for s, p in d.get("prompts", [])]
            sets = {str(k): [(str(s), int(i)) for s, i in v]
                    for k, v in d.get("neuron_sets", {}).items()}
        except (TypeError, ValueError):
            raise SpecError("prompts / neuron_sets: malformed entries") from None
        edits = EditSet.from_dict(d["edits"], arrays) if d.get("edits") else EditSet()
        return cls(str(d.get("model", "")), prompts, str(d.get("typed_prompt", "")), sets, edits,
                   dict(d.get("view", {})), dict(d.get("generation", {})))

    @staticmethod
    def sidecar_of(path: Path) -> Path:
        name = path.name
        stem = name[: -len(".json")] if name.endswith(".json") else name
        return path.with_name(stem + ".safetensors")

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write of the JSON (and the sidecar when edits carry arrays)."""
        from neurolens.spec.files import save_json_with_sidecar
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        return save_json_with_sidecar(path, self.to_dict(arrays), arrays, self.sidecar_of(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Session:
        from neurolens.spec.files import load_json_with_sidecar
        d, arrays = load_json_with_sidecar(Path(path), "session file")
        return cls.from_dict(d, arrays)
