"""Spiking networks with synaptic delays as a model family: :class:`SpikingModel`.

Sites, per layer ``l`` (``0 .. n_layers - 1``; the last layer is the readout):

- ``layers.{l}.hook_spikes``: the spikes ``[time, neurons]`` of a hidden layer (an edit here
  changes what the next layer receives; the readout never spikes and has no such site);
- ``layers.{l}.hook_v``: the membrane potential ``[time, neurons]`` before the reset (read-only
  for hidden layers; for the readout it is what the prediction is computed from, so edits act);
- ``layers.{l}.synapses``: the synapses into layer ``l`` (weights ``[neurons, inputs]`` and
  delays in bins), the site of the synapse and delay ops (not captured).

A layer runs as one convolution over time; capture hands its time bins to the store in order
(``cap[site][i]`` is ``[time, width]`` for sample ``i``, as tokens are for a language model).
Every layer is ``(K - 1) // 2`` bins longer than its input (the causal padding of the delays).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from neurolens.engine.adapters import SiteRef
from neurolens.engine.baking import BakeTarget, WeightView
from neurolens.engine.capture import Capture, CaptureHandler
from neurolens.engine.events import BatchDone, Cancelled, Failed, Finished, Started, drain
from neurolens.engine.hooks import CancelToken, RunState
from neurolens.engine.model import ModelBase
from neurolens.engine.snn.ops import check_op as check_synapse_op  # registers the SNN ops
from neurolens.engine.snn.data import SampleSet, read_samples
from neurolens.engine.snn.network import MODEL_TYPE, SpikingNet, load_network, \
    save_network
from neurolens.engine.snn.results import SNNComparison, SNNOutput
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, EditSet
from neurolens.spec.sites import is_pattern, parse_snn_site
from neurolens.store.capture_store import CaptureStore

SYNAPSES = "synapses"


class _HookPointCapture(CaptureHandler):
    """A hook point's output (spikes, membrane) is a fresh tensor that nothing writes to
    afterwards (every later step makes new tensors), so the store keeps it without a copy."""

    @property
    def borrow(self) -> bool:
        return True

    @borrow.setter
    def borrow(self, value: bool) -> None:    # the session planner's guess is for LM sites
        pass


def snn_site(layer: int, kind: str) -> str:
    return f"layers.{int(layer)}.{kind}"


# ----------------------------------------------------------------------------- the model
class SpikingModel(ModelBase):
    """A loaded spiking network with neurolens verbs (sites, capture, classify, compare,
    export)."""

    kind = "snn"
    #: what the run verbs take (the CLI's ``--samples FILE``), and its words for them
    inputs = "samples"
    input_nouns = ("samples", "bins")
    default_capture_sites = ("layers.*.hook_spikes",)
    site_pattern = "layers.{l}.<kind>"

    def __init__(self, net: SpikingNet, name_or_path: str = "", device: str = "cpu",
                 base_edits: EditSet | None = None, notes: list[str] | None = None):
        self._init_common(name_or_path, torch.device(device), base_edits, notes)
        self.net = net.to(self.device).eval()
        self.cfg = net.cfg
        self._fingerprint: str | None = None
        self._refs: dict[tuple[str, str], SiteRef] = {}

    # -- description -----------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return MODEL_TYPE

    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    @property
    def n_inputs(self) -> int:
        return self.cfg.n_in

    @property
    def class_names(self) -> list[str]:
        return list(self.cfg.class_names or [str(k) for k in range(self.cfg.n_out)])

    def __repr__(self) -> str:
        sizes = " -> ".join(str(n) for n in [self.cfg.n_in] + self.cfg.layer_sizes)
        return (f"<neurolens.SpikingModel {self.name_or_path!r} {sizes}, delays "
                f"{self.cfg.delays}, {self.n_params()} params>")

    def n_params(self) -> int:
        """Numbers that define the network: weights, delays (learned or fixed; none for a
        no-delay network) and batch-norm affine terms."""
        n = sum(p.numel() for p in self.net.parameters())
        for proj in self.net.projections():
            if proj.mode == "fixed":
                n += proj.delay.numel()
        return n

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha1()
            h.update(json.dumps(self.cfg.to_json(), sort_keys=True).encode())
            for name, t in self.net.state_dict().items():
                h.update(f"{name}{tuple(t.shape)}".encode())
                h.update(t.detach().flatten()[:64].float().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def sites(self) -> dict[str, int]:
        """Capturable sites with their widths, in layer order."""
        out: dict[str, int] = {}
        for l, n in enumerate(self.cfg.layer_sizes):
            if l < self.n_layers - 1:
                out[snn_site(l, "hook_spikes")] = n
            out[snn_site(l, "hook_v")] = n
        return out

    def synapse_sites(self) -> dict[str, int]:
        """``layers.{l}.synapses`` -> neurons of layer l (the sites of the synapse ops)."""
        return {snn_site(l, SYNAPSES): n for l, n in enumerate(self.cfg.layer_sizes)}

    def layer_of(self, name: str) -> tuple[int, str]:
        p = parse_snn_site(name)
        if p is None or p[0] >= self.n_layers or (p[1] == "hook_spikes"
                                                  and p[0] == self.n_layers - 1):
            hint = (f"the readout (layer {self.n_layers - 1}) never spikes: use "
                    f"layers.{self.n_layers - 1}.hook_v" if p is not None
                    and p[1] == "hook_spikes" and p[0] == self.n_layers - 1 else
                    f"this network has layers 0..{self.n_layers - 1}" if p is not None else
                    "names look like layers.0.hook_spikes, layers.0.hook_v, layers.0.synapses")
            raise InputError(f"unknown site '{name}' ({hint})")
        return p

    def resolve(self, name: str, io: str = "output") -> SiteRef:
        """The hook point of a site: the identity module of ``hook_spikes`` / ``hook_v``
        (output), or the delayed projection of ``synapses`` (its input or output)."""
        layer, kind = self.layer_of(name)
        if kind == SYNAPSES:
            io = io if io in ("input", "output") else "output"
        else:
            io = "output"
        ref = self._refs.get((name, io))
        if ref is None:
            block = self.net.layers[layer]
            mod = block.proj if kind == SYNAPSES else getattr(block, kind)
            path = f"layers.{layer}.{'proj' if kind == SYNAPSES else kind}"
            ref = self._refs[(name, io)] = SiteRef(name, path, mod, io, layer=layer, kind=kind)
        return ref

    def resolve_sites(self, patterns: str | Iterable[str]) -> list[str]:
        if isinstance(patterns, str):
            patterns = [patterns]
        names = list(self.sites()) + list(self.synapse_sites())
        out: list[str] = []
        for p in patterns:
            if p in ("*", "all"):
                hits = list(self.sites())
            elif is_pattern(p):
                hits = [s for s in names if fnmatch.fnmatchcase(s, p)]
                if not hits:
                    raise InputError(f"site pattern '{p}' matches no site of this network "
                                     f"(sites: {', '.join(self.sites())})")
            else:
                self.layer_of(p)
                hits = [p]
            out += [h for h in hits if h not in out]
        return out

    # -- inspectable parameters --------------------------------------------------------------------
    def weights(self, layer: int) -> np.ndarray:
        """``[neurons, inputs]`` synaptic weights into ``layer``."""
        return self.net.layers[layer].proj.weight.detach().cpu().numpy().copy()

    def delays(self, layer: int) -> np.ndarray:
        """``[neurons, inputs]`` delays in whole bins (int64; zeros for a no-delay network)."""
        return self.net.layers[layer].proj.integer_delays().cpu().numpy()

    def kernels(self, layer: int) -> np.ndarray:
        """``[neurons, inputs, K]`` the convolution kernels (synapse x delay tap; tap
        ``K - 1 - d`` holds the weight of a synapse with delay ``d``)."""
        with torch.no_grad():
            return self.net.layers[layer].proj.kernel().cpu().numpy()

    @property
    def max_delay(self) -> int:
        return self.cfg.effective_kernel - 1

    # -- edits -----------------------------------------------------------------------------------
    def _validation_widths(self, edits: EditSet) -> dict[str, int]:
        return {**self.sites(), **self.synapse_sites()}

    def _check_op(self, op: EditOp) -> None:
        if op.positions != "all":
            raise InputError(f"{op.site}: spiking-network edits act on every time bin "
                             "(positions must be 'all')")
        if op.steps is not None:
            raise InputError(f"{op.site}: a spiking network has no denoising steps")
        for s in self.resolve_sites(op.site):
            layer, kind = self.layer_of(s)
            synaptic = getattr(op, "synaptic", False)
            if synaptic and kind != SYNAPSES:
                raise InputError(f"edit op '{op.op}' acts on synapses: give a site like "
                                 f"layers.{layer}.synapses, not {s}")
            if not synaptic and kind == SYNAPSES:
                raise InputError(f"edit op '{op.op}' acts on neurons: give "
                                 f"layers.{layer}.hook_spikes (or the readout's hook_v), not {s}")
            if kind == "hook_v" and layer < self.n_layers - 1:
                raise InputError(f"{s}: a hidden layer's membrane potential is read-only (the "
                                 f"spikes are computed inside the neuron); edit "
                                 f"layers.{layer}.hook_spikes instead")
            if getattr(op, "needs_delays", False) and self.cfg.delays == "none":
                raise InputError(f"edit op '{op.op}': this network has no delays "
                                 "(a no-delay variant)")
            if synaptic:
                check_synapse_op(op, self.net.layers[layer].proj)

    # -- samples ---------------------------------------------------------------------------------
    def samples(self, samples, labels=None) -> SampleSet:
        """A :class:`SampleSet` from a file path (SHD ``.h5`` or safetensors), a SampleSet, or
        an array ``[n, time, channels]`` (one sample: ``[time, channels]``); checks the channel
        count."""
        if isinstance(samples, (str, os.PathLike)):
            s = read_samples(samples)
        elif isinstance(samples, SampleSet):
            s = samples
        else:
            a = np.asarray(samples, dtype=np.float32)
            if a.ndim == 2:
                a = a[None]
            if a.ndim != 3:
                raise InputError(f"samples must be [samples, time, channels], got shape "
                                 f"{a.shape}")
            lab = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
            s = SampleSet(a, lab)
        if len(s) == 0 or s.n_bins == 0:
            raise InputError("empty sample set")
        if s.n_channels != self.cfg.n_in:
            raise InputError(f"the samples have {s.n_channels} channels, this network takes "
                             f"{self.cfg.n_in}")
        if s.labels is not None and len(s.labels) and (s.labels.min() < 0
                                                       or s.labels.max() >= self.cfg.n_out):
            raise InputError(f"labels outside 0..{self.cfg.n_out - 1}")
        return s

    # -- runs ------------------------------------------------------------------------------------
    def run_events(self, samples, *, edits: EditSet | None = None, captures: dict | None = None,
                   batch_size: int = 256, cancel: CancelToken | None = None) -> Iterator:
        """Classify ``samples`` in batches: ``Started(n, "samples")``, a :class:`BatchDone`
        per batch, then ``Finished(SNNOutput)`` (or ``Cancelled`` / ``Failed``). Hooks exist
        only while a batch runs."""
        s = self.samples(samples)
        factory = self.session_factory(edits, captures)
        n = len(s)
        yield Started(n, "samples")
        preds, probs = [], []
        try:
            for a in range(0, n, batch_size):
                if cancel is not None and cancel.cancelled:
                    yield Cancelled(None, at=a)
                    return
                idx = list(range(a, min(n, a + batch_size)))
                x = torch.from_numpy(s.spikes[a:a + batch_size]).to(self.device)
                state = RunState(batch=len(idx), seq=x.shape[1], prompt_index=idx)
                with torch.inference_mode(), factory(state):
                    v = self.net(x)
                    p = torch.softmax(v, -1)
                preds.append(p.sum(1).argmax(1).cpu().numpy())
                probs.append(p.float().cpu().numpy())
                yield BatchDone(idx, idx[-1] + 1, n)
        except Exception as e:  # noqa: BLE001 - reported to the consumer as an event
            yield Failed(e)
            return
        yield Finished(SNNOutput(np.concatenate(preds).astype(np.int64), np.concatenate(probs),
                                 s.labels, self.class_names))

    def classify(self, samples, *, edits: EditSet | None = None, batch_size: int = 256,
                 labels=None) -> SNNOutput:
        """Predictions and class probabilities over time (see :class:`SNNOutput`)."""
        return drain(self.run_events(self.samples(samples, labels), edits=edits,
                                     batch_size=batch_size), what="classification")

    def generate(self, samples, *, edits: EditSet | None = None, **kw) -> SNNOutput:
        """The model protocol's run verb: for a spiking network, :meth:`classify`."""
        return self.classify(samples, edits=edits, **kw)

    run = generate

    def capture(self, samples, sites=("layers.*.hook_spikes",), *, reduce: str = "tokens",
                edits: EditSet | None = None, batch_size: int = 256,
                store: CaptureStore | None = None, set_name: str | None = None,
                out: str | Path | None = None, cancel: CancelToken | None = None,
                progress=None, **_ignored) -> Capture:
        """Record the sites (patterns allowed) for every sample: ``cap[site][i]`` is
        ``[time, width]`` (``reduce="tokens"``: the layer's time bins in order; ``"mean"`` /
        ``"max"`` / ``"last"``: ``[1, width]``). ``out=`` streams the rows to a safetensors
        file; ``set_name`` files the samples under a set (with running statistics)."""
        s = self.samples(samples)
        names = self.resolve_sites(sites)
        bad = [n for n in names if n not in self.sites()]
        if bad:
            raise InputError(f"{', '.join(bad)}: synapses are parameters, not activations "
                             "(see SpikingModel.weights / delays / kernels)")
        if store is None:
            store = CaptureStore(stats=set_name is not None, out=out)
        labels = self.class_names
        prompts = []
        for i in range(len(s)):
            lab = f" ({labels[s.labels[i]]})" if s.labels is not None else ""
            prompts.append(f"sample {i}{lab}")
            store.set_prompt(i, prompts[-1], set_name)
        caps = {n: _HookPointCapture(n, store, reduce) for n in names}
        try:
            drain(self.run_events(s, edits=edits, captures=caps, batch_size=batch_size,
                                  cancel=cancel), progress, "capture")
        except BaseException:
            store.abort()
            raise
        n_bins = s.n_bins + self.n_layers * ((self.cfg.effective_kernel - 1) // 2)
        bins = [f"t{t}" for t in range(n_bins)]
        cap = Capture(prompts, names, [bins for _ in prompts], reduce, store=store)
        if out is not None:
            store.close(cap.metadata())
            cap.path = Path(out)
        return cap

    def compare(self, samples, edits: EditSet, *, batch_size: int = 256) -> SNNComparison:
        """Classify with and without ``edits``: accuracy (overall, per class) before/after."""
        s = self.samples(samples)
        return SNNComparison(self.classify(s, batch_size=batch_size),
                             self.classify(s, edits=edits, batch_size=batch_size))

    # -- export ----------------------------------------------------------------------------------
    export_words = {"source": "network", "weights": "weights and delays",
                    "library": "`neurolens` (`neurolens.engine.snn.network.load_network`)",
                    "why": "they are not one weight and one whole-bin delay per synapse",
                    "loader": "neurolens.engine.snn.network.load_network"}

    def bake_target(self, net: SpikingNet, site: str) -> BakeTarget | None:
        """Hidden spikes are read by the next layer's synapses; the readout's membrane is
        written (linearly, no bias) by its synapses; ``synapses`` sites are the projection."""
        layer, kind = self.layer_of(site)
        if kind == "hook_spikes":
            return BakeTarget(reads=WeightView(net.layers[layer + 1].proj))
        if kind == "hook_v" and layer == self.n_layers - 1:
            return BakeTarget(writes=WeightView(net.layers[layer].proj), writes_linear=True,
                              writes_zero=True)
        if kind == SYNAPSES:
            return BakeTarget(writes=WeightView(net.layers[layer].proj))
        return None

    def _export_copy(self) -> SpikingNet:
        return copy.deepcopy(self.net).eval()

    def _save_export(self, net: SpikingNet, tmp: Path) -> None:
        save_network(net, tmp)

    def export_npz(self, edits: EditSet | None, path: str | Path, force: bool = False) -> Path:
        """The edited network as a portable ``.npz`` (weights, whole-bin delays, batch-norm
        statistics, LIF parameters; :mod:`neurolens.engine.snn.reference` runs it with numpy
        alone). Only edits that bake exactly: the others are refused."""
        import tempfile

        from neurolens.engine.snn.portable import save_npz
        with tempfile.TemporaryDirectory(prefix="neurolens-npz-") as tmp:
            report = self.export(edits, Path(tmp) / "net")
            if report.sidecar:
                raise InputError("the .npz holds one weight and one whole-bin delay per synapse;"
                                 f" these edits do not bake into that: {', '.join(report.sidecar)}")
            return save_npz(load_network(report.path), path, force=force)

    def default_samples(self) -> Path | None:
        """The folder's held-out samples (``samples/heldout.safetensors``), if it has them."""
        p = Path(self.name_or_path) / "samples" / "heldout.safetensors"
        return p if p.is_file() else None


def load_snn(path: str | os.PathLike, *, device: str = "cpu",
             apply_sidecar: bool = True) -> SpikingModel:
    """Load an SNN folder (``config.json`` with model_type ``neurolens-snn`` and
    ``model.safetensors``)."""
    from neurolens.engine.export import SIDECAR_NAME
    path = Path(path)
    net = load_network(path)
    base, notes = None, []
    side = path / SIDECAR_NAME
    if apply_sidecar and side.is_file():
        base = EditSet.load(side)
        notes.append(f"re-applying {len(base)} edit(s) from {SIDECAR_NAME} that are not "
                     "baked into the weights")
    return SpikingModel(net, name_or_path=str(path), device=device if device != "auto" else "cpu",
                        base_edits=base, notes=notes)
