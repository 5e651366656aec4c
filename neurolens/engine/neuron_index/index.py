"""Reading a neuron index: per-neuron dashboards (top examples with their context windows,
recomputed from the corpus; the histogram; the firing density) and where an index for a loaded
model lives (:func:`find_index`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurolens.engine.neuron_index import files
from neurolens.engine.neuron_index.corpus import Source, source_path
from neurolens.engine.neuron_index.digest import weights_digest
from neurolens.errors import InputError

#: the app's data folder when set (tests, the bench); else the platform's user data folder
SETTINGS_DIR_ENV = "NEUROLENS_SETTINGS_DIR"


@dataclass
class Example:
    doc: int
    pos: int
    value: float
    tokens: list[str] = field(default_factory=list)   # the context window, one string a token
    focus: int = -1                                    # index of (doc, pos) in ``tokens``
    acts: list[float] | None = None                    # the neuron over the window (with a model)
    window: tuple[int, int] = field(default=(0, 0), repr=False)   # its token span in the doc

    def to_json(self) -> dict:
        d = {"doc": self.doc, "pos": self.pos, "value": round(float(self.value), 6),
             "tokens": self.tokens, "focus": self.focus}
        if self.acts is not None:
            d["acts"] = [round(float(a), 6) for a in self.acts]
        return d


@dataclass
class Dashboard:
    site: str
    neuron: int
    density: float                  # share of tokens above ``threshold``
    threshold: float
    hist_edges: np.ndarray          # [bins + 1]; the first and last bins are under/overflow
    hist_counts: np.ndarray         # [bins]
    n_tokens: int
    top: list[Example]
    mean: float = 0.0
    max: float = 0.0
    note: str = ""                  # e.g. the corpus is gone: examples without their text

    def to_json(self) -> dict:
        return {"site": self.site, "neuron": self.neuron, "density": self.density,
                "threshold": self.threshold, "n_tokens": self.n_tokens, "mean": self.mean,
                "max": self.max, "hist_edges": [float(e) for e in self.hist_edges],
                "hist_counts": [int(c) for c in self.hist_counts],
                "top": [e.to_json() for e in self.top], "note": self.note}


def data_dir() -> Path:
    d = os.environ.get(SETTINGS_DIR_ENV)
    if d:
        return Path(d)
    try:
        from platformdirs import user_data_dir
        return Path(user_data_dir("neurolens", "neurolens"))
    except ImportError:  # pragma: no cover
        return Path.home() / ".local" / "share" / "neurolens"


def user_index_dir(model) -> Path:
    """Where "Build index" puts the index of ``model``: ``<user data>/indexes/<digest>/``."""
    return data_dir() / "indexes" / weights_digest(model)


def _matches(folder: Path, digest: str) -> bool:
    try:
        m = files.read_manifest(folder)
        return m.get("digest") == digest and bool(files.state_files(folder))
    except (InputError, OSError):
        return False


def _plausible(folder: Path, model) -> bool:
    """Whether ``folder`` holds an index whose sites and widths this model has: read from its
    manifest, with no digest (hashing every weight takes seconds at 8B, and most models have
    no index at all)."""
    try:
        widths = files.read_manifest(folder).get("widths") or {}
        return bool(widths) and all(model.site_width(s) == int(w) for s, w in widths.items())
    except Exception:  # noqa: BLE001 - an unreadable manifest or a site this model lacks
        return False


def any_user_index(model) -> bool:
    """Whether the user-data folder has an index this model could have built (its sites and
    widths): False without computing the weights digest."""
    root = data_dir() / "indexes"
    return root.is_dir() and any(d.is_dir() and _plausible(d, model) for d in root.iterdir())


def find_index(model, extra_dirs=()) -> Path | None:
    """The folder of an index built for exactly these weights: in the user-data folder, beside
    the model (``<model folder>/index``), or in ``extra_dirs`` (index folders, or folders of
    indexes named by digest); of several, the one over the most tokens. None when there is
    none. The weights digest is computed only when some index has this model's sites and
    widths."""
    src = Path(str(getattr(model, "name_or_path", "") or ""))
    near = [src / "index"] if str(src) and src.is_dir() else []
    extra = [Path(d) for d in extra_dirs]

    def holds(d: Path) -> bool:            # an index folder, or a folder of them
        return _plausible(d, model) or (d.is_dir() and any(
            e.is_dir() and _plausible(e, model) for e in d.iterdir()))
    if not (any_user_index(model) or any(_plausible(c, model) for c in near)
            or any(holds(d) for d in extra)):
        return None
    digest = weights_digest(model)
    cands = [user_index_dir(model)] + near
    for d in extra:
        cands += [d, d / digest]
    found = [c for c in cands if c.is_dir() and _matches(c, digest)]
    # the one covering the most tokens: a "Build index" cancelled early in the user-data folder
    # does not hide the complete index shipped beside the model (first found wins a tie)
    return max(found, key=_tokens, default=None)


def _tokens(folder: Path) -> int:
    try:
        latest = files.latest_state(folder)
        return int(latest[1].get("n_tokens", 0)) if latest else 0
    except (InputError, OSError, ValueError):
        return 0


class NeuronIndex:
    """An index folder opened for reading (see :mod:`.files` for the layout)."""

    def __init__(self, folder: Path, manifest: dict, state: Path, meta: dict, model=None):
        self.folder, self.manifest, self.state, self.meta = folder, manifest, state, meta
        self.digest: str = manifest["digest"]
        self.sites: list[str] = list(manifest["sites"])
        self.widths: dict[str, int] = dict(manifest["widths"])
        self.n_docs: int = int(meta["n_docs"])
        self.n_tokens: int = int(meta["n_tokens"])
        self.top_k, self.bins = int(manifest["top_k"]), int(manifest["bins"])
        self.context, self.seq_len = int(manifest["context"]), int(manifest["seq_len"])
        self.threshold = float(manifest["threshold"])
        self.sources: list[dict] = list(meta["sources"])
        self._model = model
        self._tok = None
        self._arrays: dict[str, dict[str, np.ndarray]] = {}
        self._readers: dict[int, Source | None] = {}

    @classmethod
    def open(cls, folder, model=None) -> NeuronIndex:
        """Open an index; with ``model``, check it was built for these weights."""
        folder = Path(folder)
        manifest = files.read_manifest(folder)
        latest = files.latest_state(folder)
        if latest is None:
            raise InputError(f"the index at {folder} has no finished chunk yet; build it")
        if latest[1].get("digest") != manifest.get("digest"):
            raise InputError(f"corrupt index {folder}: {latest[0].name} belongs to other weights")
        idx = cls(folder, manifest, latest[0], latest[1], model)
        if model is not None:
            idx.check_model(model)
        return idx

    @property
    def corpus(self) -> str:
        """The corpus, in words: its sources and their document counts."""
        return "; ".join(f"{e['path']} ({e['n_docs']} docs)" for e in self.sources)

    def check_model(self, model) -> None:
        d = weights_digest(model)
        if d != self.digest:
            raise InputError(f"the index at {self.folder} was built for other weights (digest "
                             f"{self.digest[:12]}, this model {d[:12]}); build one for this model")

    # -- arrays ------------------------------------------------------------------------------------
    def _site(self, site: str) -> dict[str, np.ndarray]:
        if site not in self.sites:
            raise InputError(f"site {site} is not in this index (indexed: "
                             f"{', '.join(self.sites)})")
        got = self._arrays.get(site)
        if got is None:
            got = self._arrays[site] = files.read_state_arrays(self.state, site)
        return got

    def _neuron(self, site: str, neuron: int) -> dict[str, np.ndarray]:
        a = self._site(site)
        if not 0 <= neuron < self.widths[site]:
            raise InputError(f"neuron {neuron} is out of range for {site} (width "
                             f"{self.widths[site]})")
        return a

    def histogram(self, site: str, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(edges [bins + 3], counts [bins + 2]): under, the regular bins, over."""
        a = self._neuron(site, neuron)
        lo, step = float(a["lo"][neuron]), float(a["step"][neuron])
        inner = lo + step * np.arange(self.bins + 1, dtype=np.float64)
        under = min(float(a["min"][neuron]), inner[0])
        over = max(float(a["max"][neuron]), inner[-1])
        return np.concatenate([[under], inner, [over]]), a["hist"][neuron].astype(np.int64)

    def top_neurons(self, site: str, by: str = "max", k: int = 50) -> list[tuple[int, float]]:
        """Neurons of ``site`` ranked by their largest activation, firing density or mean."""
        a = self._site(site)
        n = max(self.n_tokens, 1)
        score = {"max": a["max"].astype(np.float64), "density": a["above"] / n,
                 "mean": a["sum"] / n}.get(by)
        if score is None:
            raise InputError(f"unknown ranking '{by}' (choose from max, density, mean)")
        order = np.argsort(-score, kind="stable")[:k]
        return [(int(i), float(score[i])) for i in order]

    # -- the corpus ------------------------------------------------------------------------------
    def _source_of(self, doc: int) -> tuple[int, int]:
        start = 0
        for i, e in enumerate(self.sources):
            if doc < start + e["n_docs"]:
                return i, doc - start
            start += e["n_docs"]
        raise InputError(f"document {doc} is not in this index ({self.n_docs} documents)")

    def doc_text(self, doc: int) -> str:
        i, j = self._source_of(doc)
        if i not in self._readers:
            path = source_path(self.sources[i], self.folder)
            try:
                self._readers[i] = Source(path, self.sources[i]["kind"])
            except InputError:
                self._readers[i] = None
        r = self._readers[i]
        if r is None:
            raise InputError(f"the corpus of this index is gone: {self.sources[i]['path']}")
        return r.doc(j)

    def tokenizer(self):
        if self._tok is None:
            if self._model is not None and getattr(self._model, "tokenizer", None) is not None:
                self._tok = self._model.tokenizer
            else:
                from transformers import AutoTokenizer
                self._tok = AutoTokenizer.from_pretrained(str(self.folder / "tokenizer"))
        return self._tok

    def doc_ids(self, doc: int) -> list[int]:
        return list(self.tokenizer()(self.doc_text(doc))["input_ids"])

    # -- dashboards --------------------------------------------------------------------------------
    def dashboard(self, site: str, neuron: int, k: int = 20, model=None,
                  context: int | None = None) -> Dashboard:
        """The dashboard of one neuron: its top ``k`` examples (context windows decoded from the
        corpus: ``context`` tokens before, half as many after), histogram, density. With
        ``model`` (the same weights) each example also gets the neuron's activation over its
        window (``acts``), for shading; that runs short forwards, so call it off the GUI
        thread."""
        a = self._neuron(site, neuron)
        before = self.context if context is None else int(context)
        after = before // 2
        vals, docs, poss = a["top_values"][:, neuron], a["top_doc"][:, neuron], \
            a["top_pos"][:, neuron]
        keep = [j for j in range(min(k, len(vals))) if docs[j] >= 0]
        tops, note = [], ""
        tok = self.tokenizer() if keep else None
        cache: dict[int, list[int]] = {}
        for j in keep:
            d, p = int(docs[j]), int(poss[j])
            ex = Example(d, p, float(vals[j]))
            try:
                ids = cache.get(d)
                if ids is None:
                    ids = cache[d] = self.doc_ids(d)
            except InputError as e:
                note = str(e)
                tops.append(ex)
                continue
            lo, hi = max(0, p - before), min(len(ids), p + after + 1)
            ex.tokens = [tok.decode([t]) for t in ids[lo:hi]]
            ex.focus = p - lo
            ex.window = (lo, hi)
            tops.append(ex)
        if model is not None and any(e.tokens for e in tops):
            self.check_model(model)
            self._shade(model, site, neuron, tops, cache)
        edges, counts = self.histogram(site, neuron)
        n = max(self.n_tokens, 1)
        return Dashboard(site, neuron, float(a["above"][neuron]) / n, self.threshold, edges,
                         counts, self.n_tokens, tops, float(a["sum"][neuron]) / n,
                         float(a["max"][neuron]), note)

    def _shade(self, model, site, neuron, tops: list[Example], cache) -> None:
        """The neuron's activation over each window, run as the build ran it: the window's
        part in each ``seq_len`` segment, from the segment's start."""
        L = self.seq_len
        rows, where = [], []
        for e in tops:
            if not e.tokens:
                continue
            lo, hi = e.window
            ids = cache[e.doc]
            for s in range(lo // L, (hi - 1) // L + 1):
                a, b = max(lo, s * L), min(hi, (s + 1) * L)
                rows.append(ids[s * L:b])
                where.append((e, a - s * L, b - s * L))
        if not rows:
            return
        cap = model.capture(rows, [site], batch_size=16)
        acts: dict[int, list[float]] = {}
        for (e, a, b), arr in zip(where, cap[site]):
            acts.setdefault(id(e), []).extend(float(v) for v in arr[a:b, neuron])
        for e in tops:
            if id(e) in acts:
                e.acts = acts[id(e)]

    def summary(self) -> str:
        return (f"neuron index {self.folder}: {len(self.sites)} sites, {self.n_docs} documents, "
                f"{self.n_tokens} tokens, top {self.top_k}, digest {self.digest[:12]}")

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "digest": self.digest, "sites": self.sites,
                "n_docs": self.n_docs, "n_tokens": self.n_tokens, "top_k": self.top_k,
                "bins": self.bins, "threshold": self.threshold, "context": self.context,
                "seq_len": self.seq_len, "sources": self.sources}
