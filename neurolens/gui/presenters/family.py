"""What differs in the window between model families, chosen once when a model loads.

:func:`family_for` picks a :class:`LMFamily`, a :class:`DiffusionFamily` or an
:class:`SNNFamily` from the loaded model's info; the window and the presenters ask it for site
names, labels, the jobs and views it uses and the reductions that differ (tokens of a language
model, denoising steps of a pipeline, time bins of a spiking network) instead of branching on
the model kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurolens.evals.skills import SKILLS
from neurolens.gui.presenters.stats import stat_matrix
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
                   "steps_spin", "guidance_spin", "run_list", "seed")
#: the family-specific views of the window (widget names); each family shows some of them
PANELS = ("prompt_box", "token_box", "scatter", "output_label", "image_grid", "rasters",
          "delays")


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
    generation_rows = ("max_tokens", "sampling", "temperature", "stop_eos", "stop_answer",
                       "run_list", "seed")
    map_title = "layer × neuron"
    split = (470, 380)          # the Neurons tab: heights of the maps and of the views below
    text_output = True          # generated text (else images and a step slider)
    uses_steps = False
    output = "text"             # what a run gives: text | images | classes (its jobs)
    picker = "prompts"          # the prompt panel: prompts | samples
    inspector = "lens"          # the inspector's lower part: logit lens | kernel
    #: the layer map's colour scale ignores the strongest neurons (see ``Levels``): few
    #: neurons, where one saturated neuron would otherwise set the scale for all of them
    robust_levels = False
    #: the window's family-specific views (widget names) shown for this family
    panels = ("prompt_box", "token_box", "scatter", "output_label")

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

    def marked_cells(self, site: str, idx: int, layer: int) -> list[tuple[int, int]]:
        """The layer-map cells that mark neuron ``idx`` of ``site`` (``layer``: the view
        bar's)."""
        row = self.site_row(site)
        return [] if row is None else [(row, idx)]

    def default_layer(self) -> int:
        """The view bar's layer after a load (when the session has none for this model)."""
        return self.n_layers - 1

    def showcase_cell(self, m: np.ndarray) -> tuple[int, int]:
        """The layer-map cell a screenshot inspects: the largest magnitude."""
        r, c = np.unravel_index(int(np.argmax(np.abs(m))), m.shape)
        return int(r), int(c)

    def map_site(self, row: int, layer: int, kind: str) -> str:
        """The site of a layer-map row (``layer``: the view bar's layer)."""
        return self.site(row, kind)

    def map_shape(self, kind: str, layer: int) -> tuple[int, int]:
        """(rows, columns) of the layer map before any data."""
        return self.n_layers, self.layer_columns(kind)

    def layer_stat(self, maps, store, view) -> np.ndarray | None:
        """The layer map's matrix from one store: one row per layer (block)."""
        step = view.step if self.uses_steps else -1
        return stat_matrix(store, self.sites(view.kind), maps.set_names, view, step)

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
    generation_rows = ("steps_spin", "guidance_spin", "run_list", "seed")
    text_output = False
    uses_steps = True
    output = "images"
    panels = ("prompt_box", "token_box", "scatter", "image_grid")

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


class SNNFamily(LMFamily):
    """Spiking networks: samples where a language model has prompts, time bins where it has
    tokens; the layer map shows one layer's firing rate per class x neuron, the rasters and
    the readout's class probabilities replace the token map, the delay views the key space."""

    kind = "snn"
    blocks_word = "layers"
    placeholder = "Pick samples: a shipped set or a sample file (.safetensors, SHD .h5)"
    token_title, token_axis = "time bin × neuron (chosen layer, sample)", "time bin"
    layer_axis, layer_label = "class", "layer"
    generation_rows = ()
    map_title = "firing rate per class × neuron (the chosen layer; readout: mean potential)"
    robust_levels = True
    split = (330, 520)
    text_output = False
    output = "classes"
    picker = "samples"
    inspector = "kernel"
    panels = ("rasters", "delays")

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names", []))

    def shipped(self) -> list[ShippedSet]:
        files = self.info.get("sample_files", {})
        order = sorted(files, key=lambda n: (n != "probe", n))     # the probe split first
        return [ShippedSet(f"{name} samples", files[name], None, name) for name in order]

    def neuron_kinds(self) -> list[str]:
        return ["hook_spikes", "hook_v"]

    def site(self, layer: int, kind: str) -> str:
        """The readout never spikes: its one site is its membrane potential."""
        if kind == "hook_spikes" and layer >= self.n_layers - 1:
            kind = "hook_v"
        return f"layers.{int(layer)}.{kind}"

    def sites(self, kind: str) -> list[str]:
        return list(dict.fromkeys(self.site(layer, kind) for layer in range(self.n_layers)))

    def site_row(self, site: str) -> int | None:
        return None

    def marked_cells(self, site: str, idx: int, layer: int) -> list[tuple[int, int]]:
        """A neuron of the shown layer: its column in every class row."""
        if not site.startswith(f"layers.{int(layer)}."):
            return []
        return [(k, idx) for k in range(len(self.class_names) or 1)]

    def row_labels(self, n: int) -> list[str]:
        names = self.class_names
        return names[:n] if n == len(names) else ["all samples"][:n]

    def default_layer(self) -> int:
        return 0         # the first hidden layer (its delays read the input channels)

    def showcase_cell(self, m: np.ndarray) -> tuple[int, int]:
        """The most class-selective neuron (its rate furthest above its mean over classes)."""
        r, c = np.unravel_index(int(np.argmax(m - m.mean(0, keepdims=True))), m.shape)
        return int(r), int(c)

    def map_site(self, row: int, layer: int, kind: str) -> str:
        return self.site(layer, kind)

    def map_shape(self, kind: str, layer: int) -> tuple[int, int]:
        return len(self.class_names) or 1, int(self.info["sites"].get(self.site(layer, kind), 0))

    def layer_columns(self, kind: str) -> int:
        return max(self.info["sites"].values()) if self.info.get("sites") else 0

    def layer_stat(self, maps, store, view) -> np.ndarray | None:
        """Firing rate (spikes per bin; the readout: its mean membrane potential) per class x
        neuron of the view bar's layer, or its set difference A - B per class."""
        from neurolens.gui.presenters.snn import class_matrix
        return class_matrix(store, self.site(view.layer, view.kind), maps.labels,
                            maps.set_names, len(self.class_names), view.diff, view.set_a,
                            view.set_b)

    def position_view(self, rows: np.ndarray, tokens: list[str]):
        if not len(rows):
            return None
        return rows, [f"t{k}" for k in range(len(rows))]

    def position_labels(self, n: int, tokens: list[str]) -> list[str]:
        return [f"t{k}" for k in range(n)]

    def key_vector(self, rows: np.ndarray, prompt_len: int | None) -> np.ndarray | None:
        return None      # no key space: the delay views take its place

    def expected_rows(self, prompt_len: int | None, max_new_tokens: int) -> int:
        return 0

    def lens_error(self, site: str) -> str | None:
        return "logit lens: language models only"

    def model_label(self) -> str:
        from pathlib import Path
        info = self.info
        short = Path(info["name"]).name or info["name"]
        sizes = " → ".join(str(n) for n in [info.get("n_inputs", "?")]
                           + list(info.get("layer_sizes", [])))
        return (f"{short} · spiking network {sizes} · delays {info.get('delays', '?')} · "
                f"{info['n_params']:,} params")


#: the window's family class per ``model.kind``; a new family adds its class here
FAMILIES: dict[str, type[LMFamily]] = {c.kind: c for c in (LMFamily, DiffusionFamily, SNNFamily)}


def family_for(info: dict | None) -> LMFamily:
    """The family of a loaded model's info (a language model before any loads, and for a kind
    with no family class of its own)."""
    return FAMILIES.get((info or {}).get("kind"), LMFamily)(info)
