"""What differs in the window between model families, chosen once when a model loads.

:func:`family_for` picks a :class:`LMFamily` or a :class:`DiffusionFamily` from the loaded
model's info; the window and the presenters ask it for site names, labels and the reductions
that differ (tokens of a language model, denoising steps of a pipeline) instead of branching on
the model kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurolens.evals.skills import SKILLS
from neurolens.spec.sites import SITE_KINDS, site_name

SHIPPED_SETS = SKILLS
#: diffusion prompt sets shipped with the demo diffusion model: (file, split, set name)
DIFFUSION_SETS = (("diffusion_memorized", None, "memorized"),
                  ("diffusion_ordinary", "eval", "ordinary"),
                  ("diffusion_ordinary", "probe", "ordinary-probe"))
#: the site kinds of FFN neurons (the layer map shows one of them)
NEURON_KINDS = [k for k in SITE_KINDS if k.startswith("mlp.")]
#: the Generation form's rows (widget names) over every family
GENERATION_ROWS = ("max_tokens", "sampling", "temperature", "stop_eos", "stop_answer",
                   "steps_spin", "guidance_spin")


@dataclass(frozen=True)
class ShippedSet:
    """A prompt set the app ships: its label in the combo and how to load it."""

    label: str
    file: str
    split: str | None
    name: str | None = None      # the set name it gets (None: the file's)


class LMFamily:
    """Language models: one row per layer, one column per FFN neuron, rows of tokens."""

    kind = "lm"
    blocks_word = "layers"
    placeholder = "Type a prompt, e.g. Compute: 47+38="
    token_title, token_axis = "token × neuron", "token"
    layer_axis, layer_label = "layer", "token view: layer"
    generation_rows = ("max_tokens", "sampling", "temperature", "stop_eos", "stop_answer")
    text_output = True          # generated text (else images and a step slider)
    uses_steps = False

    def __init__(self, info: dict | None = None):
        self.info = info or {}

    @property
    def n_layers(self) -> int:
        return int(self.info.get("n_layers", 0))

    def shipped(self) -> list[ShippedSet]:
        return [ShippedSet(f"{s} (probe split)", s, "probe") for s in SHIPPED_SETS]

    def neuron_kinds(self) -> list[str]:
        """The site kinds the layer map can show for this model."""
        if not self.info:
            return list(NEURON_KINDS)
        have = {s.split(".", 2)[2] for s in self.info["sites"] if s.count(".") >= 2}
        return sorted(have & set(NEURON_KINDS), key=NEURON_KINDS.index)

    def site(self, layer: int, kind: str) -> str:
        return site_name(layer, kind)

    def sites(self, kind: str) -> list[str]:
        return [self.site(layer, kind) for layer in range(self.n_layers)]

    def site_row(self, site: str) -> int | None:
        """Heatmap row of a site's neurons (None when they are not shown). The map shows one of
        the NEURON_KINDS, and neuron j of any of them is the same FFN neuron j (gate, up
        projection, post-activation), so a site of any of them marks its layer's row."""
        parts = site.split(".", 2)
        if len(parts) == 3 and parts[2] in NEURON_KINDS and parts[1].isdigit():
            return int(parts[1])
        return None

    def row_labels(self, n: int) -> list[str]:
        return [f"L{i}" for i in range(n)]

    def layer_columns(self, kind: str) -> int:
        """Columns of the layer map before any data (its shape for the loaded model)."""
        return int(self.info["sites"].get(self.site(0, kind), 0))

    def position_view(self, rows: np.ndarray, tokens: list[str]):
        """(rows, labels) of the token map from one prompt's rows (None: nothing to show)."""
        return rows, list(tokens[: len(rows)])

    def position_labels(self, n: int, tokens: list[str]) -> list[str]:
        return tokens

    def key_vector(self, rows: np.ndarray, prompt_len: int | None) -> np.ndarray | None:
        """One prompt's point in key space: its last prompt token (None until it is there)."""
        n = len(rows) if prompt_len is None else prompt_len
        if len(rows) < n or n == 0:
            return None
        return rows[n - 1]

    def expected_rows(self, prompt_len: int | None, max_new_tokens: int) -> int:
        """Rows the token map will hold when a prompt's generation ends (0: unknown)."""
        return 0 if prompt_len is None else prompt_len + int(max_new_tokens)

    def lens_error(self, site: str) -> str | None:
        """Why the logit lens cannot show ``site`` (None: it can)."""
        return None if site.endswith("mlp.hook_post") else "logit lens: pick a hook_post neuron"

    def model_label(self) -> str:
        from pathlib import Path
        info = self.info
        short = Path(info["name"]).name or info["name"]
        return (f"{short} · {info['model_type']} · {info['n_layers']} {self.blocks_word} · "
                f"{info['n_params'] / 1e6:.1f}M params")


class DiffusionFamily(LMFamily):
    """Diffusion pipelines: one row per UNet FFN block (padded to the widest), denoising steps
    where a language model has tokens, images where it has text."""

    kind = "diffusion"
    blocks_word = "FFN blocks"
    placeholder = "Type a prompt, e.g. a handwritten digit 3"
    token_title, token_axis = "step × neuron (chosen block, prompt)", "denoising step"
    layer_axis, layer_label = "UNet FFN block", "step view: block"
    generation_rows = ("steps_spin", "guidance_spin")
    text_output = False
    uses_steps = True

    def shipped(self) -> list[ShippedSet]:
        return [ShippedSet(f"{name} ({split or 'all'})", f, split, name)
                for f, split, name in DIFFUSION_SETS]

    def neuron_kinds(self) -> list[str]:
        return ["ff.hook_post"]

    def site(self, layer: int, kind: str) -> str:
        return self.info["site_list"][layer]

    def site_row(self, site: str) -> int | None:
        sl = self.info.get("site_list", [])
        return sl.index(site) if site in sl else None

    def row_labels(self, n: int) -> list[str]:
        return [self.info["aliases"][s] for s in self.info["site_list"]][:n]

    def layer_columns(self, kind: str) -> int:
        widths = self.info["sites"]
        return max(widths.get(s, 0) for s in self.info["site_list"])

    def position_view(self, rows: np.ndarray, tokens: list[str]):
        if not len(rows):
            return None
        return rows.reshape(len(rows), -1), [f"t{k}" for k in range(len(rows))]

    def position_labels(self, n: int, tokens: list[str]) -> list[str]:
        return [f"step {k}" for k in range(n)]

    def key_vector(self, rows: np.ndarray, prompt_len: int | None) -> np.ndarray | None:
        if not len(rows):
            return None
        return rows.reshape(len(rows), -1).mean(0)     # mean over denoising steps

    def expected_rows(self, prompt_len: int | None, max_new_tokens: int) -> int:
        return 0

    def lens_error(self, site: str) -> str | None:
        return ("logit lens: language models only (a UNet neuron writes to image features, "
                "not tokens)")


def family_for(info: dict | None) -> LMFamily:
    """The family of a loaded model's info (a language model before any loads)."""
    return DiffusionFamily(info) if info and info.get("kind") == "diffusion" else LMFamily(info)
