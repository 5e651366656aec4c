"""What the window shows of a spiking network, computed off the GUI thread (no Qt).

- :func:`overview` / :func:`synapses`: the synapses of every layer as plain numpy (weights,
  integer delays, the kernels ``synapse x delay tap``), as the synapse and delay edits leave
  them, and the network's shape, for the delay views and the inspector;
- :func:`neuron_health`: per hidden layer the neurons that never spike on a sample set (dead)
  and those that spike in more than half of the bins (saturated);
- :func:`classify_into`: one classification that streams every layer's time bins into a
  :class:`CaptureStore` as the batches run (the live rasters), as engine events;
- :func:`verify_export`: reload an exported folder and classify samples with it and with the
  in-app edited model (the export's reload check).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurolens.engine.capture import CaptureHandler
from neurolens.store.capture_store import CaptureStore

#: largest difference of a class probability between the reloaded folder and the edited model
#: that counts as the same
TOLERANCE = 1e-4
#: a neuron spiking in more than this fraction of the bins (mean over the samples) is saturated
SATURATED = 0.5


def sample_files(model) -> dict[str, Path]:
    """The sample sets shipped in the model's folder (``samples/*.safetensors``), by name."""
    folder = Path(model.name_or_path) / "samples"
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))}


def synapses(model, layer: int, edits=None) -> dict:
    """The synapses into ``layer`` (``weights``, whole-bin ``delays`` ``[neurons, inputs]`` and
    ``kernels`` ``[neurons, inputs, K]``) as the enabled synapse and delay ops of ``edits``
    leave them (without edits: the loaded network's)."""
    import torch

    from neurolens.engine.snn.ops import LayerEdit, apply_op
    ops = []
    for op in edits or []:
        if op.enabled and getattr(op, "synaptic", False) and any(
                model.layer_of(s)[0] == layer for s in model.resolve_sites(op.site)):
            ops.append(op)
    if not ops:
        return {"weights": model.weights(layer), "delays": model.delays(layer),
                "kernels": model.kernels(layer)}
    proj = model.net.layers[layer].proj
    edit = LayerEdit(proj)
    edit.ops = ops
    with torch.no_grad():
        w = proj.weight.detach()
        d = proj.integer_delays().to(w.dtype)
        for op in ops:
            w, d = apply_op(op, w, d, proj.kernel_size)
        k = edit.kernel()
    return {"weights": w.cpu().numpy().copy(), "delays": d.cpu().numpy().astype(np.int64),
            "kernels": k.cpu().numpy().copy()}


def overview(model, edits=None) -> dict:
    """The network's synapses (under the synapse ops of ``edits``) and shape as plain data
    (numpy arrays, lists, numbers)."""
    cfg = model.cfg
    layers = [synapses(model, layer, edits) for layer in range(model.n_layers)]
    return {"n_inputs": int(cfg.n_in), "layer_sizes": list(cfg.layer_sizes),
            "class_names": model.class_names, "max_delay": int(model.max_delay),
            "kernel_size": int(cfg.effective_kernel), "delays_mode": cfg.delays,
            "time_step_ms": float(cfg.time_step_ms), "task": cfg.task,
            "layers": layers, "sample_files": {k: str(v) for k, v in sample_files(model).items()}}


def neuron_health(model, samples, edits=None, batch_size: int = 256) -> dict:
    """Per hidden layer ``l``: ``rate`` (mean over samples of the fraction of bins with a spike,
    per neuron), ``dead`` (no spike in any sample) and ``saturated`` (rate above
    :data:`SATURATED`) as boolean arrays, and their counts."""
    hidden = [f"layers.{layer}.hook_spikes" for layer in range(model.n_layers - 1)]
    if not hidden:
        return {}
    cap = model.capture(samples, sites=hidden, reduce="tokens", edits=edits,
                        batch_size=batch_size)
    out = {}
    for layer, site in enumerate(hidden):
        per = np.stack([cap[site][i].mean(0) for i in range(len(cap.prompts))])   # [n, width]
        rate = per.mean(0)
        dead = per.max(0) == 0
        sat = rate > SATURATED
        out[layer] = {"rate": rate, "dead": dead, "saturated": sat,
                      "n_dead": int(dead.sum()), "n_saturated": int(sat.sum()),
                      "n": int(per.shape[1]), "samples": int(per.shape[0])}
    return out


def classify_into(model, spikes: np.ndarray, labels, names: list[str], set_names: list[str],
                  store: CaptureStore, edits=None, cancel=None, batch_size: int = 32):
    """Classify ``spikes`` ``[n, time, channels]`` while every layer's spikes and membrane
    potential stream into ``store`` (sample ``i`` filed under ``names[i]`` in set
    ``set_names[i]``), batch by batch in sample order. Yields the engine's events; the
    ``Finished`` result is the :class:`SNNOutput`."""
    store.clear()
    for i, (name, s) in enumerate(zip(names, set_names)):
        store.set_prompt(i, name, s)
    caps = {site: CaptureHandler(site, store, "tokens") for site in model.sites()}
    s = model.samples(spikes, labels)
    yield from model.run_events(s, edits=edits, captures=caps, batch_size=batch_size,
                                cancel=cancel)


def verify_export(model, folder, edits, spikes: np.ndarray, labels=None) -> dict:
    """Reload ``folder`` and classify ``spikes`` with it and with ``model`` under ``edits``:
    the largest class-probability difference and whether every prediction is the same."""
    from neurolens.engine.loading import load
    if spikes is None or not len(spikes):
        return {}
    again = load(str(folder))
    a = again.classify(spikes, labels=labels)
    b = model.classify(spikes, edits=edits, labels=labels)
    diff = float(np.abs(a.probs - b.probs).max())
    return {"samples": int(len(spikes)), "max_abs_prob_diff": diff,
            "same_output": bool((a.predictions == b.predictions).all()) and diff < TOLERANCE,
            "accuracy": a.accuracy, "plain_exact": not getattr(again, "base_edits", None)}

