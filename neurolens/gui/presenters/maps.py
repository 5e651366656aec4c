"""The heatmaps' and the key-space scatter's data, from the capture stores.

:class:`Maps` turns the stores of a run (the edited run and, after Compare, its baseline) into
the layer x neuron matrix, one prompt's token (or denoising step) x neuron rows, one key-space
point per prompt and a neuron's profile for the inspector, for the choices of the view bar
(:class:`View`). :class:`Levels` keeps the colour scale steady while a run streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurolens.gui.presenters.family import LMFamily
from neurolens.gui.presenters.stats import stat_matrix, step_mean  # noqa: F401 - their home was here
from neurolens.store import CaptureStore

#: what the maps show (the view bar's "show" choice)
EDITED, BASELINE, DIFFERENCE = 0, 1, 2


@dataclass
class View:
    """The view bar's choices."""

    kind: str = "mlp.hook_post"     # the site kind on the maps
    diff: bool = False              # statistic: the set difference A - B (else the mean)
    set_a: str = ""
    set_b: str = ""
    show: int = EDITED
    layer: int = 0                  # the token (step) map's layer (block)
    step: int = -1                  # diffusion: one denoising step (-1: mean over steps)
    prompt: int = 0                 # the token map's prompt


class Levels:
    """Symmetric colour levels per map that change only when the data outgrow or shrink a lot.
    The scale comes from the non-zero entries: in a sparse (ReLU) layer most activations are
    exactly zero, and a percentile over all of them would be zero too. A map of more than
    ``SAMPLE`` entries (32 x 14,336 at Llama-3-8B widths) is sampled at an even stride: the
    percentile of all 458,752 took ~12 ms a refresh, of the sample ~1 ms."""

    SAMPLE = 1 << 16

    def __init__(self):
        self._amp: dict[str, float] = {}

    def clear(self) -> None:
        self._amp.clear()

    @staticmethod
    def _nonzero(data: np.ndarray) -> np.ndarray:
        mag = np.abs(data[np.isfinite(data)])
        return mag[mag > 0]

    def __call__(self, key: str, data: np.ndarray, robust: bool = False) -> tuple[float, float]:
        """``robust``: the scale of a small map (rows x neurons) whose few strongest neurons
        would set it alone (a saturated spiking neuron: rate 1 beside rates of 0.1): the 90th
        percentile of the neurons' largest |value|, so those neurons show at full colour and
        the others still differ."""
        if robust and np.ndim(data) == 2 and np.shape(data)[1] >= 10:
            peak = self._nonzero(np.abs(np.nan_to_num(np.asarray(data, np.float64))).max(0))
            return self._settle(key, float(np.percentile(peak, 90)) if peak.size else 1.0)
        data = np.asarray(data).ravel()
        mag = self._nonzero(data[::-(-data.size // self.SAMPLE)] if data.size > self.SAMPLE
                            else data)
        if mag.size < 256 and data.size > self.SAMPLE:     # sparse: the sample may miss them
            mag = self._nonzero(data)
        return self._settle(key, float(np.percentile(mag, 99.5)) if mag.size else 1.0)

    def _settle(self, key: str, amp: float) -> tuple[float, float]:
        amp = max(amp, 1e-6)
        cur = self._amp.get(key)
        if cur is None or amp > cur * 1.25 or amp < cur * 0.4:
            cur = self._amp[key] = amp
        return (-cur, cur)


def pad_rows(rows: np.ndarray, labels: list[str], total: int):
    """While tokens stream the token map keeps the run's final height, the rows still to come
    neutral: its axes and range stay put instead of changing every token."""
    if total <= len(rows):
        return rows, list(labels)
    rows = np.vstack([rows, np.zeros((total - len(rows), rows.shape[1]), rows.dtype)])
    return rows, list(labels) + [""] * (total - len(labels))


@dataclass
class Maps:
    """The views' data for one run (its prompts and sets) from the run's stores."""

    store: CaptureStore
    base: CaptureStore
    family: LMFamily = field(default_factory=LMFamily)
    prompts: tuple = ()
    set_names: tuple = ()
    max_new_tokens: int = 0
    levels: Levels = field(default_factory=Levels)
    labels: np.ndarray | None = None     # spiking networks: each sample's class

    def begin(self, prompts, set_names, max_new_tokens: int = 0, labels=None) -> None:
        """A run starts: its prompts and sets (and the samples' classes), fresh colour
        levels."""
        self.prompts, self.set_names = tuple(prompts), tuple(set_names)
        self.max_new_tokens = int(max_new_tokens)
        self.labels = None if labels is None else np.asarray(labels)
        self.levels.clear()

    def _prompt(self, view: View) -> int:
        return min(view.prompt, len(self.prompts) - 1)

    def layer_matrix(self, view: View) -> np.ndarray | None:
        """The layer x neuron statistic of the edited run, the baseline, or their difference."""
        if not self.family.info:
            return None

        def of(store):
            return self.family.layer_stat(self, store, view)
        if view.show == EDITED:
            return of(self.store)
        base = of(self.base)
        if view.show == BASELINE or base is None:
            return base
        ed = of(self.store)
        return None if ed is None else ed - base

    def token_matrix(self, view: View) -> tuple[np.ndarray, list[str]] | None:
        """One prompt's rows (tokens, or denoising steps) x neurons at the chosen layer."""
        if not self.prompts or not self.family.info:
            return None
        i = self._prompt(view)
        site = self.family.site(view.layer, view.kind)
        store = self.base if view.show == BASELINE else self.store
        try:
            rows = store.rows(site, i)
            if view.show == DIFFERENCE:
                base = self.base.rows(site, i)
                n = min(len(rows), len(base))
                rows = rows[:n] - base[:n]
        except KeyError:
            return None
        return self.family.position_view(rows, store.tokens.get(i, []))

    def expected_rows(self, view: View, running: bool) -> int:
        """Rows the token map will hold when the shown prompt's generation ends (0: unknown
        or not streaming)."""
        if not running or not self.prompts:
            return 0
        return self.family.expected_rows(self.store.prompt_len.get(self._prompt(view)),
                                         self.max_new_tokens)

    def layer_view(self, view: View):
        """(matrix, colour levels, row labels) of the layer map; None: nothing to draw."""
        m = self.layer_matrix(view)
        if m is None:
            return None
        return (m, self.levels("layer", m, self.family.robust_levels),
                self.family.row_labels(m.shape[0]))

    def token_view(self, view: View, running: bool = False):
        """(rows, colour levels, row labels) of the token map, padded to the run's final
        height while it streams; None: nothing to draw."""
        tm = self.token_matrix(view)
        if tm is None or not len(tm[0]):
            return None
        rows, labels = tm
        levels = self.levels("token", rows)
        rows, labels = pad_rows(rows, labels, self.expected_rows(view, running))
        return rows, levels, [t.replace("\n", "⏎") for t in labels]

    def keyspace_matrix(self, view: View) -> tuple[np.ndarray, list[str], list[str]] | None:
        """One point per prompt at the chosen layer (None until every prompt has one)."""
        if not self.prompts or not self.family.info:
            return None
        site = self.family.site(view.layer, view.kind)
        xs = []
        for i in range(len(self.prompts)):
            try:
                rows = self.store.rows(site, i)
            except KeyError:
                return None
            x = self.family.key_vector(rows, self.store.prompt_len.get(i))
            if x is None:
                return None
            xs.append(x)
        return np.stack(xs), list(self.set_names), list(self.prompts)

    def neuron_profile(self, site: str, idx: int):
        """A neuron's values per prompt set, and its top activations (value, where) over the
        run's prompts, highest first (at most 12)."""
        by_set: dict[str, list[np.ndarray]] = {}
        top: list[tuple[float, str]] = []
        for i, s in enumerate(self.set_names):
            try:
                rows = self.store.rows(site, i)
            except KeyError:
                continue
            if not len(rows) or idx >= rows.shape[1]:
                continue
            rows = rows.reshape(len(rows), -1)
            col = rows[:, idx]
            by_set.setdefault(s, []).append(col)
            toks = self.family.position_labels(len(rows), self.store.tokens.get(i, []))
            k = int(np.argmax(col))
            tok = toks[k] if k < len(toks) else "?"
            top.append((float(col[k]), f"{tok!r} in “{self.prompts[i][:50]}”"))
        top.sort(key=lambda t: -t[0])
        return {s: np.concatenate(v) for s, v in by_set.items()}, top[:12]
