"""What the window shows of a spiking network, from plain arrays (no Qt, no torch).

- :class:`SampleBank`: the sample sets picked in the prompt panel (shipped probe / held-out
  sets, sample files) and what a run takes from them (:class:`SampleRun`);
- the views' data from the capture stores: a sample's raster per layer, the readout's class
  probabilities over time (the softmax of its membrane potential), firing rate per class x
  neuron and its A - B difference between two sample sets;
- the synapse views: delay histogram, delay x weight points, a neuron's kernel and its delays
  against each class's template; dead and saturated neuron counts;
- Compare's per-class rows, and the spiking-network edit ops of the edits panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurolens.store import CaptureStore


def spikes_site(layer: int) -> str:
    return f"layers.{layer}.hook_spikes"


def v_site(layer: int) -> str:
    return f"layers.{layer}.hook_v"


# -- samples ---------------------------------------------------------------------------------
@dataclass
class SampleSet:
    name: str
    spikes: np.ndarray               # [n, time, channels]
    labels: np.ndarray | None        # [n]
    path: str = ""


@dataclass
class SampleRun:
    """An immutable request: classify these samples (with these edits)."""

    prompts: tuple[str, ...]          # one name per sample ("probe 3 · motif2")
    set_names: tuple[str, ...]
    spikes: np.ndarray               # [n, time, channels]
    labels: np.ndarray | None
    edits: object = None
    run_id: int = 0
    max_new_tokens: int = 0


@dataclass
class SampleBank:
    """The picked sample sets, in the order they were added."""

    sets: list[SampleSet] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    def add(self, name: str, spikes: np.ndarray, labels, path: str = "") -> str:
        names = {s.name for s in self.sets}
        base, k = name.strip() or "samples", 2
        name = base
        while name in names:
            name, k = f"{base} {k}", k + 1
        lab = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.sets.append(SampleSet(name, np.asarray(spikes, dtype=np.float32), lab, path))
        return name

    def clear(self) -> None:
        self.sets.clear()

    def __len__(self) -> int:
        return sum(len(s.spikes) for s in self.sets)

    def set_names(self) -> list[str]:
        return [s.name for s in self.sets]

    def sources(self) -> list[list]:
        """What a session keeps: ``[name, file, samples]`` per set read from a file."""
        return [[s.name, s.path, len(s.spikes)] for s in self.sets if s.path]

    def label_name(self, k: int | None) -> str:
        if k is None:
            return "?"
        return self.class_names[k] if k < len(self.class_names) else str(k)

    def names(self) -> list[tuple[str, str]]:
        """(set, sample name) per sample, in run order."""
        out = []
        for s in self.sets:
            for i in range(len(s.spikes)):
                lab = "" if s.labels is None else f" · {self.label_name(int(s.labels[i]))}"
                out.append((s.name, f"{s.name} {i}{lab}"))
        return out

    def table_rows(self) -> list[tuple[str, str, int]]:
        """The prompt table's rows: (set, sample, colour index of the set)."""
        order = self.set_names()
        return [(s, text, order.index(s)) for s, text in self.names()]

    def for_run(self, edits=None, run_id: int = 0) -> SampleRun | None:
        if not self.sets:
            return None
        n_bins = max(s.spikes.shape[1] for s in self.sets)
        spikes = np.concatenate([np.pad(s.spikes, ((0, 0), (0, n_bins - s.spikes.shape[1]),
                                                   (0, 0))) for s in self.sets])
        labels = (np.concatenate([s.labels for s in self.sets])
                  if all(s.labels is not None for s in self.sets) else None)
        names = self.names()
        return SampleRun(tuple(n for _, n in names), tuple(s for s, _ in names), spikes, labels,
                         edits, run_id)


# -- rasters and the readout ------------------------------------------------------------------
def rows_or_none(store: CaptureStore, site: str, i: int) -> np.ndarray | None:
    try:
        return store.rows(site, i)
    except KeyError:
        return None


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def probabilities(store: CaptureStore, n_layers: int, i: int) -> np.ndarray | None:
    """``[time, classes]``: the readout's class probabilities of sample ``i`` at every bin so
    far (the softmax of its membrane potential: the readout never spikes or resets)."""
    v = rows_or_none(store, v_site(n_layers - 1), i)
    return None if v is None or not len(v) else softmax(v.astype(np.float64)).astype(np.float32)


def padded(rows: np.ndarray, total: int) -> np.ndarray:
    """Rows still to come as zeros: the raster keeps its final width while bins stream."""
    if total <= len(rows):
        return rows
    return np.vstack([rows, np.zeros((total - len(rows), rows.shape[1]), rows.dtype)])


def layer_bins(n_bins: int, kernel_size: int, layer: int) -> int:
    """Bins of layer ``layer``'s output for ``n_bins`` input bins (each layer adds its causal
    padding of ``(K - 1) // 2`` bins)."""
    return n_bins + (layer + 1) * ((kernel_size - 1) // 2)


# -- firing rates per class -------------------------------------------------------------------
def per_sample_rates(store: CaptureStore, site: str, n: int) -> np.ndarray | None:
    """``[n, width]``: each sample's mean over its bins (spikes: the fraction of bins with a
    spike); None until every sample is there."""
    out = []
    for i in range(n):
        r = rows_or_none(store, site, i)
        if r is None or not len(r):
            return None
        out.append(r.mean(0))
    return np.stack(out).astype(np.float32) if out else None


def class_rates(rates: np.ndarray, labels: np.ndarray | None, n_classes: int,
                mask: np.ndarray | None = None) -> np.ndarray:
    """``[classes, width]``: the mean rate of the samples of each class (of those in ``mask``);
    a class without samples is NaN. Without labels: one row, the mean of all."""
    if mask is None:
        mask = np.ones(len(rates), bool)
    if labels is None:
        return rates[mask].mean(0, keepdims=True) if mask.any() else \
            np.full((1, rates.shape[1]), np.nan, np.float32)
    out = np.full((n_classes, rates.shape[1]), np.nan, np.float32)
    for k in range(n_classes):
        m = mask & (labels == k)
        if m.any():
            out[k] = rates[m].mean(0)
    return out


def class_matrix(store: CaptureStore, site: str, labels, set_names, n_classes: int,
                 diff: bool = False, set_a: str = "", set_b: str = "") -> np.ndarray | None:
    """The class x neuron map: the firing rate per class, or (``diff``) the rate in set A
    minus the rate in set B per class. NaN (no sample of a class) shows as 0."""
    rates = per_sample_rates(store, site, len(set_names))
    if rates is None:
        return None
    if diff:
        sets = np.asarray(set_names)
        a = class_rates(rates, labels, n_classes, sets == set_a)
        b = class_rates(rates, labels, n_classes, sets == set_b)
        m = a - b
    else:
        m = class_rates(rates, labels, n_classes)
    return np.nan_to_num(m).astype(np.float32)


# -- synapses ---------------------------------------------------------------------------------
def delay_histogram(delays: np.ndarray, weights: np.ndarray, max_delay: int):
    """(bins 0..max_delay, counts) of the delays of the synapses with a non-zero weight."""
    d = delays[weights != 0].astype(np.int64)
    return np.arange(max_delay + 1), np.bincount(d, minlength=max_delay + 1)[:max_delay + 1]


def delay_weight_points(delays: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[synapses, 2]``: (delay, weight) of every synapse of a layer."""
    return np.stack([delays.reshape(-1).astype(np.float32),
                     weights.reshape(-1).astype(np.float32)], 1)


def alignment(delays: np.ndarray, weights: np.ndarray, templates: np.ndarray) -> dict:
    """How well a neuron's delays line one class's motif up into one bin. In class ``k``
    input ``c`` fires ``templates[k, c]`` bins after the motif starts and arrives
    ``templates[k, c] + delays[c]`` bins after it; over the excitatory synapses (w > 0) a
    detector of class ``k`` has these arrivals in (nearly) one bin. Returns per class the
    spread (standard deviation) of the arrivals, weighted by w, the best class, and per class
    the excitatory inputs' arrivals relative to their weighted mean (``relative``)."""
    w = np.clip(weights.astype(np.float64), 0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    arr = templates.astype(np.float64) + delays[None].astype(np.float64)   # [classes, inputs]
    mean = (arr * w).sum(1) / w.sum()
    spread = np.sqrt(((arr - mean[:, None]) ** 2 * w).sum(1) / w.sum())
    best = int(np.argmin(spread))
    exc = weights > 0 if (weights > 0).any() else np.ones(len(weights), bool)
    rel = [(arr[k] - mean[k])[exc] for k in range(len(arr))]
    return {"spread": spread, "arrival": mean, "best": best, "arrivals": arr, "relative": rel}


def kernel_view(kernels: np.ndarray, neuron: int) -> np.ndarray:
    """``[inputs, taps]``: the neuron's incoming kernels, the taps reversed so that the x axis
    reads as delay in bins (tap ``K - 1 - d`` holds a synapse's weight at delay ``d``)."""
    return kernels[neuron][:, ::-1]


def _counts(h: dict) -> str:
    return f"dead {h['n_dead']}/{h['n']} · saturated {h['n_saturated']}/{h['n']}"


def health_line(health: dict, edited: dict | None = None) -> str:
    """"L0: dead 3/48 · saturated 0/48 (on 2048 held-out samples)" for every hidden layer; with
    ``edited`` (the same under the enabled edits) "...; edited: dead 9/48 · saturated 0/48"."""
    parts = []
    for layer, h in sorted(health.items()):
        part = f"L{layer}: {_counts(h)}"
        e = (edited or {}).get(layer)
        if e is not None:
            part += f"; edited: {_counts(e)}"
        parts.append(part)
    if not parts:
        return ""
    n = next(iter(health.values()))["samples"]
    return "; ".join(parts) + f" (on {n} held-out samples)"


def layer_health_text(health: dict, edited: dict | None, layer: int) -> str:
    """" · dead 3/48 · saturated 0/48 (edited: dead 9/48 · saturated 0/48)" or ""."""
    h = health.get(layer)
    if not h:
        return ""
    e = (edited or {}).get(layer)
    return f" · {_counts(h)}" + (f" (edited: {_counts(e)})" if e is not None else "")


def _state(h: dict, neuron: int) -> str:
    return "dead" if h["dead"][neuron] else "saturated" if h["saturated"][neuron] else "active"


def neuron_health_text(health: dict, layer: int, neuron: int,
                       edited: dict | None = None) -> str:
    h = health.get(layer)
    if h is None or neuron >= h["n"]:
        return ""
    text = (f"{_state(h, neuron)}: spikes in {100 * h['rate'][neuron]:.1f}% of the bins "
            "(held-out mean)")
    e = (edited or {}).get(layer)
    if e is not None:
        text += f"; edited: {_state(e, neuron)}, {100 * e['rate'][neuron]:.1f}%"
    return text


# -- Compare ----------------------------------------------------------------------------------
def compare_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """The metrics table: (class, before, after, after - before) per class, then all."""
    def f(x):
        return "–" if x is None else f"{x:.3f}"
    rows = []
    for name, v in r["per_class"].items():
        b, a = v["before"], v["after"]
        rows.append((name, f(b), f(a), "–" if a is None or b is None else f"{a - b:+.3f}"))
    b, a = r["accuracy_before"], r["accuracy_after"]
    rows.append(("all", f(b), f(a), "–" if a is None or b is None else f"{a - b:+.3f}"))
    return rows


def compare_summary(r: dict) -> str:
    acc = ("" if r["accuracy_before"] is None else
           f" Accuracy {r['accuracy_before']:.3f} → {r['accuracy_after']:.3f}.")
    return (f"{r['n']} samples, {r['n_edits']} edit(s): {r['n_changed']} prediction(s) "
            f"changed.{acc} The rasters show the edited run; 'show: baseline' the one before.")


def compare_html(r: dict, names: list[str], limit: int = 200) -> str:
    """The samples whose prediction changed (first ``limit``)."""
    cn = r["class_names"]
    rows = []
    for i, (b, a) in enumerate(zip(r["before"], r["after"])):
        if b != a and len(rows) < limit:
            lab = r["labels"][i] if r.get("labels") is not None else None
            truth = cn[lab] if lab is not None else "?"
            rows.append(f"<tr><td>{names[i] if i < len(names) else i}</td><td>{truth}</td>"
                        f"<td>{cn[b]}</td><td><b>{cn[a]}</b></td></tr>")
    if not rows:
        return "<p>No prediction changed.</p>"
    return ("<table cellpadding=3><tr><th>sample</th><th>label</th><th>before</th>"
            "<th>after</th></tr>" + "".join(rows) + "</table>")


# -- the edits panel's spiking-network ops --------------------------------------------------------
#: op id -> (label, parameter label or None, default, minimum, maximum, decimals, uses a seed)
SNN_OPS = {
    "prune_synapses": ("prune synapses (smallest |w| fraction)", "fraction", 0.5, 0.0, 1.0, 2,
                       False),
    "delay_zero": ("delays → 0", None, 0, 0, 0, 0, False),
    "delay_quantize": ("quantize delays", "step", 2, 1, 64, 0, False),
    "delay_shuffle": ("shuffle delays (seeded)", None, 0, 0, 0, 0, True),
    "delay_jitter": ("jitter delays ± bins (seeded)", "bins", 1, 1, 64, 0, True),
    "delay_blur": ("re-blur kernels (σ)", "sigma", 1.0, 0.05, 20.0, 2, False),
}


def layer_op(op: str, layer: int, value: float = 0.0, seed: int = 0):
    """The edit op ``op`` on the synapses into ``layer`` with the form's parameter."""
    from neurolens.spec import snn_edits as se
    site = f"layers.{int(layer)}.synapses"
    if op == "prune_synapses":
        return se.PruneSynapses(site, fraction=float(value))
    if op == "delay_zero":
        return se.ZeroDelays(site)
    if op == "delay_quantize":
        return se.QuantizeDelays(site, step=int(value))
    if op == "delay_shuffle":
        return se.ShuffleDelays(site, seed=int(seed))
    if op == "delay_jitter":
        return se.JitterDelays(site, bins=int(value), seed=int(seed))
    if op == "delay_blur":
        return se.BlurKernels(site, sigma=float(value))
    raise ValueError(f"unknown spiking-network op '{op}'")
