"""A loaded spiking network on screen: the sample picker (shipped probe / held-out sets,
sample files), the network's synapses and neuron health (fetched once per load by a job), the
rasters and class probabilities of the chosen sample, the delay views of the chosen layer and
a neuron's kernels in the inspector. Active only while the loaded model is a spiking network
(the family says so at load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from neurolens.gui import jobs
from neurolens.gui.controllers import Controller
from neurolens.gui.controllers.prompts import fill_set_table
from neurolens.gui.presenters import snn
from neurolens.gui.presenters.maps import BASELINE, DIFFERENCE


class SNNController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.bank = snn.SampleBank()
        self.overview: dict | None = None
        self.health: dict = {}
        self.health_edited: dict | None = None    # under the enabled edits (None: no edits)
        self.health_set: str | None = None
        self.active = False
        self.loading_sets = 0
        self.synapses_pending = 0
        self.pending_sets: list = []          # a session's sample sets, read at the next load

    # -- load ----------------------------------------------------------------------------------
    def loaded(self, info: dict) -> None:
        """A model finished loading (any family): for a spiking network, fetch its synapses and
        health, and pick the shipped probe set when no samples are picked yet."""
        w = self.w
        self.active = w.family.kind == "snn"
        self.overview, self.health, self.synapses_pending = None, {}, 0
        self.health_edited = None
        if not self.active:
            return
        self.bank.class_names = list(info.get("class_names", []))
        # samples picked for a network with the same inputs stay (e.g. its reloaded export)
        self.bank.sets = [s for s in self.bank.sets
                          if s.spikes.shape[2] == info.get("n_inputs")]
        self.fill_table()
        files = info.get("sample_files", {})
        self.health_set = files.get("heldout")
        w.jobs.submit(jobs.snn_overview(self.health_set), done=self._overview,
                      failed=lambda m: w.show_error(f"Could not read the network.\n\n{m}"))
        if self.pending_sets:
            self._load_pending()
        elif "probe" in files and not self.bank.sets:
            self.load_path(files["probe"], w.shipped_n.value(), "probe")

    def restore_sets(self, sets: list, now: bool) -> None:
        """A session's sample sets: read them now (its network is the loaded one) or when its
        network has loaded."""
        self.pending_sets = [list(s) for s in sets]
        if now and self.active and self.pending_sets:
            self._load_pending()

    def _load_pending(self) -> None:
        sets, self.pending_sets = self.pending_sets, []
        self.bank.clear()
        self.fill_table()
        for name, path, n in sets:
            self.load_path(path, int(n), str(name))

    def _overview(self, ov: dict) -> None:
        self.overview, self.health = ov, ov.get("health", {})
        if self.w.current_edits() is not None:
            self.edits_changed()
        self._health_note()
        line = snn.health_line(self.health)
        if line and not self.w.running:
            self.w.status.setText(f"{self.w.status.text()} · {line}")
        self.draw_delays()

    def _health_note(self) -> None:
        line = snn.health_line(self.health, self.health_edited)
        if line:
            self.w.picker_label.setText(f"{self.w.family.placeholder}\n\nNeurons {line}: dead = "
                                        "no spike, saturated = spiking in over half the bins")

    def edits_changed(self) -> None:
        """The delay views and the inspector's kernels follow the enabled synapse and delay
        edits (fetched from the worker)."""
        if not self.active or self.overview is None:
            return
        self.synapses_pending += 1
        self.w.jobs.submit(jobs.snn_synapses(self.w.current_edits(), self.health_set),
                           done=self._synapses,
                           failed=self._synapses_failed)

    def _synapses(self, r: dict) -> None:
        self.synapses_pending -= 1
        if self.overview is None or self.synapses_pending:
            return                      # a newer request is on its way
        self.overview["layers"] = r["layers"]
        self.health_edited = r["health"]
        self._health_note()
        self.draw_delays()
        if self.w.selection and self.w.selection.last is not None:
            self.inspect(*self.w.selection.last)

    def _synapses_failed(self, msg: str) -> None:
        self.synapses_pending -= 1
        self.w.status.setText(f"could not read the edited synapses: {msg}")

    # -- the sample picker ---------------------------------------------------------------------
    def load_chosen_set(self) -> None:
        w = self.w
        shipped = w.family.shipped()
        if not shipped:
            w.show_error("This network ships no sample sets: use Load file….")
            return
        s = shipped[w.shipped.currentIndex()]
        self.load_path(s.file, w.shipped_n.value(), s.name)

    def load_file(self, path: str, set_name: str | None = None, n: int | None = None) -> None:
        self.load_path(path, n, set_name or Path(path).stem)

    def load_path(self, path: str, n: int | None, set_name: str) -> None:
        self.loading_sets += 1
        self.w.jobs.submit(jobs.read_samples(path, n),
                           done=lambda r: self._read(r, set_name), failed=self._read_failed)

    def _read(self, r: dict, set_name: str) -> None:
        self.loading_sets -= 1
        self.bank.add(set_name, r["spikes"], r["labels"], r["path"])
        self.fill_table()
        self.w.mark_dirty()
        if not self.loading_sets and self.w.runs.pending_after_load:   # Run came first
            self.w.runs.pending_after_load = False
            self.w.run()

    def _read_failed(self, msg: str) -> None:
        self.loading_sets -= 1
        self.w.show_error(f"Could not read the samples.\n\n{msg}")

    def file_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self.w, "Load samples", "",
                                           "Samples (*.safetensors *.h5 *.hdf5);;All files (*)")
        if f:
            self.load_file(f)

    def clear(self) -> None:
        self.bank.clear()
        self.fill_table()

    def fill_table(self) -> None:
        w = self.w
        fill_set_table(w, self.bank.table_rows(), self.bank.set_names())

    def row_chosen(self, row: int) -> None:
        """A sample chosen in the table: the rasters show it (when the run holds it)."""
        req = self.w.runs.req
        if row >= 0 and isinstance(req, snn.SampleRun) and row < len(req.prompts):
            self.w.prompt_spin.setValue(row)

    def request(self, edits, run_id: int) -> snn.SampleRun | None:
        """The picked samples as a run (None: none picked, or a set is still being read)."""
        return None if self.loading_sets else self.bank.for_run(edits, run_id)

    # -- drawing -------------------------------------------------------------------------------
    def refresh(self, view) -> None:
        """The chosen sample's rasters and class probabilities (the baseline's beside them
        after Compare), from what has streamed into the stores so far."""
        w = self.w
        req = w.runs.req
        if not self.active or req is None or not isinstance(req, snn.SampleRun):
            return
        info = w.model_info
        n_layers = info["n_layers"]
        i = min(view.prompt, len(req.prompts) - 1)
        compared = w.store_base.version > 0 and bool(w.store_base.sites())
        stores = [(w.store_base if view.show == BASELINE else w.store,
                   "baseline" if view.show == BASELINE else "edited" if compared else "run")]
        if compared and view.show != BASELINE:
            stores.append((w.store_base, "baseline"))
        potential = view.kind == "hook_v"
        w.rasters.configure(n_layers - 1, self.bank.class_names,
                            tuple(t for _, t in stores), potential)
        site = snn.v_site if potential else snn.spikes_site
        x = req.spikes[i]
        k = info["kernel_size"]
        total = snn.layer_bins(len(x), k, n_layers - 1)
        for c, (store, name) in enumerate(stores):
            rasters = [x]
            for layer in range(n_layers - 1):
                r = snn.rows_or_none(store, site(layer), i)
                rasters.append(None if r is None else snn.padded(r, snn.layer_bins(len(x), k,
                                                                                   layer)))
            probs = snn.probabilities(store, n_layers, i)
            lab = ("" if req.labels is None else
                   f" (label {self.bank.label_name(int(req.labels[i]))})")
            title = f"{name}: {req.prompts[i]}{lab}, readout class probability"
            if c == 0 and view.show == DIFFERENCE:
                title += " (difference: the edited run)"
            w.rasters.show_column(c, rasters, probs, total, title,
                                  None if req.labels is None else int(req.labels[i]))

    def draw_delays(self) -> None:
        w = self.w
        if not self.active or self.overview is None:
            return
        ov = self.overview
        layer = min(w.layer_spin.value(), len(ov["layers"]) - 1)
        L = ov["layers"][layer]
        bins, counts = snn.delay_histogram(L["delays"], L["weights"], ov["max_delay"])
        pts = snn.delay_weight_points(L["delays"], L["weights"])
        chosen = None
        last = w.selection.last
        if last is not None and last[0].startswith(f"layers.{layer}."):
            j = last[1]
            chosen = snn.delay_weight_points(L["delays"][j], L["weights"][j])
        src = "inputs" if layer == 0 else f"layer {layer - 1}"
        live = int((L["weights"] != 0).sum())
        edited = any(getattr(op, "synaptic", False) for op in w.current_edits() or [])
        title = (f"layer {layer}: {L['weights'].size} synapses from the {src} ({live} non-zero),"
                 f" delays 0..{ov['max_delay']} bins ({ov['delays_mode']}"
                 f"{'; as the enabled edits leave them' if edited else ''})")
        title += snn.layer_health_text(self.health, self.health_edited, layer)
        w.delays.show_layer(title, bins, counts, pts, chosen)

    def inspect(self, site: str, idx: int) -> None:
        """The inspector's kernel part: the neuron's incoming kernels (input x delay), its
        health and, for the first layer of a task with templates, its delays against each
        class's template."""
        w = self.w
        if self.overview is None:
            w.inspector.kernel.note.setText("reading the network's synapses…")
            return
        ov = self.overview
        layer = int(site.split(".")[1])
        L = ov["layers"][layer]
        if idx >= L["kernels"].shape[0]:
            return
        kern = snn.kernel_view(L["kernels"], idx)
        notes = [snn.neuron_health_text(self.health, layer, idx, self.health_edited)]
        a = None
        tpl = ov.get("templates")
        if layer == 0 and tpl is not None:
            a = snn.alignment(L["delays"][idx], L["weights"][idx], np.asarray(tpl))
            spread, best = a["spread"], a["best"]
            notes.append(f"its delays line up {ov['class_names'][best]}'s motif best "
                         f"(arrivals within ±{spread[best]:.1f} bins)")
        src = "input channel" if layer == 0 else f"layer {layer - 1} neuron"
        w.inspector.kernel.show_kernel(f"L{layer}.N{idx}: kernels ({src} × delay)", kern,
                                       "; ".join(n for n in notes if n))
        w.inspector.kernel.kernel.setLabel("left", src)
        w.inspector.kernel.show_alignment(a, ov["class_names"])
        self.draw_delays()

    def raster_clicked(self, layer: int, neuron: int) -> None:
        self.w.select_neurons([(snn.spikes_site(layer), neuron)])
