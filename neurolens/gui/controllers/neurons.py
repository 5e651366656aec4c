"""Neurons on screen: the selection (heatmap clicks and drags, a method's neurons; held as
ranges per site, :mod:`neurolens.gui.presenters.selection`), the inspector and its logit lens,
saved neuron sets, and the key-space scatter (PCA at once, UMAP when it is ready, a method's
cube marked)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidgetItem

from neurolens.gui import jobs
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters.results import selection_text
from neurolens.gui.presenters.selection import NeuronRanges, Selection
from neurolens.spec.sites import neuron_label


class NeuronController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.selection = Selection()                  # (site, index) pairs, as ranges
        self.sets: dict[str, Selection] = {}
        self.scatter_rid = 0
        self.scatter_data: tuple = ([], [])
        self.umap_pending = False
        #: called with (site, index) after the inspector shows a neuron (e.g. its attribution
        #: effect and corpus dashboard)
        self.inspected: list = []

    # -- selection -------------------------------------------------------------------------------
    def _map_site(self, row: int) -> str:
        w = self.w
        return w.family.map_site(row, w.layer_spin.value(), w.kind_combo.currentText())

    def layer_cell(self, row: int, col: int, additive: bool) -> None:
        self.select([(self._map_site(row), col)], additive)

    def layer_cells(self, cells: list) -> None:
        self.select(Selection((self._map_site(r), c) for r, c in cells), additive=True)

    def layer_block(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A shift-drag on the layer map: rows r0..r1 x columns c0..c1 (both included)."""
        sel = Selection()
        for r in range(r0, r1 + 1):
            sel.add_range(self._map_site(r), c0, c1 + 1)
        self.select(sel, additive=True)

    def token_cell(self, row: int, col: int, additive: bool) -> None:
        self.select([(self.w.site(self.w.layer_spin.value()), col)], additive)

    def token_cells(self, cells: list) -> None:
        site = self.w.site(self.w.layer_spin.value())
        self.select(Selection((site, c) for _, c in cells), additive=True)

    def token_block(self, r0: int, r1: int, c0: int, c1: int) -> None:
        """A shift-drag on the token map: columns c0..c1 of the shown layer."""
        sel = Selection()
        sel.add_range(self.w.site(self.w.layer_spin.value()), c0, c1 + 1)
        self.select(sel, additive=True)

    def select(self, neurons, additive: bool = False) -> None:
        """Select (site, index) pairs (a list or a :class:`Selection`); ``additive``: add them
        to the selection. The inspector shows the last one."""
        if additive:
            self.selection.add(neurons)
        else:
            self.selection = Selection(neurons)
        self.w.selection_label.setText(selection_text(self.selection))
        self.mark()
        if self.selection:
            self.inspect(*self.selection.last)

    def mark(self) -> None:
        """Mark the selection on the layer map: a method's neurons on the gate or up
        projection are marked on the post-activation map as well (the same FFN neuron). One
        run of neurons is one mark, however many cells it spans."""
        rows: dict[int, NeuronRanges] = {}
        layer = self.w.layer_spin.value()
        if self.w.model_info:
            for s, a, b in self.selection.ranges():
                for r, c in self.w.family.marked_cells(s, a, layer):
                    rows.setdefault(r, NeuronRanges()).add(c, c + b - a)
        self.w.layer_map.mark_ranges([(r, a, b) for r in sorted(rows)
                                      for a, b in rows[r].ranges()])

    def inspect(self, site: str, idx: int) -> None:
        self._inspect(site, idx)
        for call in self.inspected:
            call(site, idx)

    def _inspect(self, site: str, idx: int) -> None:
        w = self.w
        values, top = w.maps.neuron_profile(site, idx)
        w.inspector.show_neuron(neuron_label(site, idx, with_kind=True), values, top)
        if w.family.inspector == "kernel":
            w.snn.inspect(site, idx)
            return
        err = w.family.lens_error(site)
        if err is not None:
            w.inspector.show_lens({"error": err})
            return
        w.jobs.submit(jobs.logit_lens(int(site.split(".")[1]), idx), done=w.inspector.show_lens)

    # -- neuron sets -------------------------------------------------------------------------------
    def save_set(self, name: str = "") -> str | None:
        if not self.selection:
            return None
        name = name.strip() or f"neurons {len(self.sets) + 1}"
        self.sets[name] = self.selection.copy()
        self.fill_sets()
        self.w.new_set_name.clear()
        self.w.mark_dirty()
        return name

    def set_sets(self, sets: dict) -> None:
        self.sets = {k: Selection(v) for k, v in sets.items()}
        self.fill_sets()

    def fill_sets(self) -> None:
        self.w.sets_list.clear()
        for n, v in self.sets.items():
            item = QListWidgetItem(f"{n} ({len(v)} neurons)")
            item.setData(Qt.ItemDataRole.UserRole, n)
            self.w.sets_list.addItem(item)

    def select_saved(self, item: QListWidgetItem) -> None:
        self.select(self.sets[item.data(Qt.ItemDataRole.UserRole)])

    # -- key space -------------------------------------------------------------------------------
    def update_scatter(self) -> None:
        w = self.w
        km = w.keyspace_matrix()
        if km is None:
            return
        x, sets, texts = km
        self.scatter_rid += 1
        self.scatter_data = (sets, texts)
        w.scatter.set_status("key space: computing PCA…")
        w.projector.submit(self.scatter_rid, "pca", x)
        if len(texts) >= 5:
            w.projector.submit(self.scatter_rid, "umap", x)
            self.umap_pending = True

    def projected(self, rid: int, method: str, pts) -> None:
        w = self.w
        if rid != self.scatter_rid:
            return
        if isinstance(pts, Exception):
            w.status.setText(f"{method.upper()} failed: {pts}")
            return
        if method == "pca" and w.scatter.method == "umap" and not self.umap_pending:
            return
        sets, texts = self.scatter_data
        if method == "umap":
            self.umap_pending = False
        w.scatter.set_points(pts, sets, texts, method)
        if method == "pca" and self.umap_pending:
            w.scatter.set_status(f"key space (PCA, {len(texts)} prompts) · UMAP computing…")

    def show_inside(self, inside: list[bool]) -> None:
        """Mark the key-space points inside a fitted cube (when they are the ones shown)."""
        sc = self.w.scatter
        if len(sc.points) == len(inside):
            sets, texts = self.scatter_data
            sc.set_points(sc.points, sets, texts, sc.method, inside=np.array(inside, bool))
