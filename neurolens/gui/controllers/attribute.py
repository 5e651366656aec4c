"""Attribution and neuron dashboards on screen: the Attribute form's request to the worker (with
progress and cancel), its result in the Attribution tab (effect maps, the top-K table), exact
patching of the top K, the top K as prune edits or a neuron set, a clicked row or cell opened in
the inspector, and the inspected neuron's corpus dashboard from the model's index (built from
the dashboard by :class:`~neurolens.gui.controllers.index.IndexController`)."""

from __future__ import annotations

from dataclasses import replace

from neurolens.engine.attribution_metric import NEURON_KINDS
from neurolens.gui import jobs_attribute
from neurolens.gui.controllers import Controller
from neurolens.gui.controllers.index import IndexController
from neurolens.gui.presenters import attribute as pres


class AttributeController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.req: pres.AttributeRequest | None = None
        self.mean_over: str | None = None   # what a typed prompt's mean ablation averaged over
        self.result = None                  # the engine's Attribution
        self.view: pres.AttributionView | None = None
        self.busy = False
        self.token_site: str | None = None
        self._dash_rid = 0
        self._dash_shown = False            # the corpus tab was brought forward for this model
        self._inspected: tuple[str, int] | None = None
        self._index_checked = False
        self.index = IndexController(window, on_built=self._index_built)

    def wire(self) -> None:
        """Connect the views (once the window has built them)."""
        w = self.w
        p, r = w.attribute_panel, w.attribute_results
        p.attributeRequested.connect(self.attribute)
        p.cancelRequested.connect(self.cancel)
        p.verifyRequested.connect(self.verify)
        p.pruneRequested.connect(self.prune_top)
        p.selectRequested.connect(self.select_top)
        p.cleanChanged.connect(self._clean_changed)
        r.rowActivated.connect(self.open_neuron)
        r.layer_map.cellClicked.connect(self._layer_cell)
        r.token_map.cellClicked.connect(self._token_cell)
        w.right_tabs.currentChanged.connect(lambda *_: self.refresh_choices())
        w.neurons.inspected.append(self.inspected)
        self.index.wire(w.dashboard)

    def inspected(self, site: str, idx: int) -> None:
        """The inspector shows a neuron: add its attribution effect and its corpus dashboard."""
        text = self.effect_text(site, idx)
        if text is not None:
            self.w.inspector.title.setText(f"{self.w.inspector.title.text()}<br>{text}")
        self._inspected = (site, int(idx))
        self.show_dashboard(site, idx)

    def set_family(self, fam) -> None:
        """Attribution and dashboards are for language models: other families hide them."""
        w, lm = self.w, fam.kind == "lm"
        w.right_tabs.setTabVisible(w.right_tabs.indexOf(w.attribute_panel), lm)
        w.center_tabs.setTabVisible(w.center_tabs.indexOf(w.attribute_results), lm)
        w.inspector.lower.setTabVisible(w.inspector.lower.indexOf(w.dashboard), lm)
        self._dash_shown = False
        self._inspected = None
        self._index_checked = False         # the build bar learns the index state lazily
        if lm:
            self.refresh_choices()

    # -- the form ------------------------------------------------------------------------------
    def refresh_choices(self) -> None:
        """The clean / corrupted combos from the prompt list, the site kinds from the model."""
        w, p = self.w, self.w.attribute_panel
        names = w.set_names()
        p.set_choices(pres.clean_choices(names), pres.corrupt_choices(names))
        kinds = [k for k in w.family.neuron_kinds() if k in NEURON_KINDS]
        if [p.kind.itemText(i) for i in range(p.kind.count())] != kinds:
            cur = p.kind.currentText()
            p.kind.clear()
            p.kind.addItems(kinds)
            p.kind.setCurrentText(cur if cur in kinds else
                                  ("mlp.hook_post" if "mlp.hook_post" in kinds else cur))

    def _clean_changed(self, choice: str) -> None:
        ans = pres.set_answer(self.w.prompt_list.rows, self.w.prompt_list.answers, choice)
        if choice.startswith(pres.SET_PREFIX):
            self.w.attribute_panel.answer.setText(ans)

    def request(self) -> pres.AttributeRequest:
        w, p = self.w, self.w.attribute_panel
        return pres.build_request(
            w.prompt_list.rows, w.prompt_list.answers, clean=p.clean.currentText(),
            typed=w.prompt_edit.toPlainText(), answer=p.answer.text(),
            contrast=p.contrast.text(), corruption=p.corruption.currentText(),
            corrupt_text=p.corrupt_text.text(), method=p.method.currentText(),
            kind=p.kind.currentText() or "mlp.hook_post", top=p.top_k.value())

    def _can_start(self) -> bool:
        w = self.w
        if w.model_info is None:
            w.show_error("No model loaded.")
            return False
        if w.family.kind != "lm":
            w.show_error("Attribution works on language models.")
            return False
        if self.busy or w.running or self.index.building:
            w.status.setText("busy: wait for the current run to finish (or cancel it)")
            return False
        return True

    def _start(self, text: str) -> None:
        self.busy = True
        self.w.attribute_panel.set_busy(True, self.result is not None)
        self.w.set_busy(True, text)
        self.w.progress_bar.setRange(0, 0)

    def _end(self, text: str) -> None:
        self.busy = False
        w = self.w
        w.attribute_panel.set_busy(False, self.result is not None)
        w.progress_bar.setRange(0, 100)
        w.progress_bar.setValue(100 if text != "cancelled" else 0)
        w.set_busy(False, text)

    def _progress(self, done: int, total: int) -> None:
        if total > 0:
            self.w.progress_bar.setRange(0, total)
            self.w.progress_bar.setValue(done)

    def attribute(self) -> None:
        """Attribute the form's answer to every neuron of the chosen sites (on the worker)."""
        self.refresh_choices()
        if not self._can_start():
            return
        try:
            req = self.request()
        except pres.FormError as e:
            self.w.show_error(str(e))
            return
        self.req, self.mean_over = req, None
        typed = not self.w.attribute_panel.clean.currentText().startswith(pres.SET_PREFIX)
        self._start(f"attributing ({pres.METHODS[req.method]})…")
        self.w.jobs.submit(jobs_attribute.attribute(req, self.w.current_edits(),
                                                    skill_mean=typed),
                           progress=self._progress, update=self._mean_chosen,
                           done=self._attributed, failed=self._failed,
                           cancelled=self._cancelled)

    def _mean_chosen(self, u: dict) -> None:
        """A typed prompt's mean ablation averages over its skill's probe split: keep it for
        "verify exactly"."""
        self.req = replace(self.req, mean_prompts=u["mean_prompts"])
        self.mean_over = u["mean_over"]

    def _attributed(self, res) -> None:
        self.result = res
        self.view = pres.result_view(res, self.req.top)
        self.w.attribute_results.show_result(self.view)
        self.w.center_tabs.setCurrentWidget(self.w.attribute_results)
        if self.view.rows:
            self.show_tokens(self.view.rows[0].site)
        note = f" · mean ablation over {self.mean_over}" if self.mean_over else ""
        self.w.attribute_panel.status.setText(self.view.header + note)
        self._end(f"attribution done: {self.view.header}{note}")

    def _failed(self, msg: str) -> None:
        self._end("attribution failed")
        self.w.show_error(msg)

    def _cancelled(self) -> None:
        self._end("cancelled")

    def cancel(self) -> None:
        if self.busy:
            self.w.worker.cancel_token.cancel()

    # -- the result ------------------------------------------------------------------------------
    def top_neurons(self) -> list[tuple[str, int]]:
        return [(r.site, r.neuron) for r in self.view.rows] if self.view else []

    def verify(self) -> None:
        """Exact activation patching of the top K (on the worker, with progress and cancel)."""
        if self.view is None or not self._can_start():
            return
        self._start(f"patching the top {len(self.view.rows)} exactly…")
        self.w.jobs.submit(jobs_attribute.verify(self.req, self.top_neurons(),
                                                 self.w.current_edits()),
                           started=lambda total: self._progress(0, total),
                           progress=self._progress, done=self._verified,
                           failed=self._failed, cancelled=self._cancelled)

    def _verified(self, res) -> None:
        pres.with_exact(self.view, res)
        self.w.attribute_results.fill_table()
        self._end(f"verified the top {len(self.view.rows)} by exact patching")

    def prune_top(self) -> None:
        """The top K as one prune edit set (one op per site) in the edits panel."""
        if self.result is None:
            return
        k = len(self.view.rows)
        edits = self.result.as_edits(k)
        self.w.edits_panel.add_ops(list(edits), f"prune top {k} (attribution)")
        self.w.status.setText(f"added a prune of the top {k} neurons to the edits")

    def select_top(self) -> str | None:
        """Select the top K and keep them as a neuron set."""
        if self.view is None:
            return None
        self.w.select_neurons(self.top_neurons())
        return self.w.save_selection_as_set(f"top {len(self.view.rows)} attribution")

    def open_neuron(self, site: str, neuron: int) -> None:
        """Select a neuron: the inspector shows it (and its effect), the token map its layer."""
        self.w.select_neurons([(site, int(neuron))])
        self.w.right_tabs.setCurrentIndex(0)
        if site != self.token_site:
            self.show_tokens(site)

    def _layer_cell(self, row: int, col: int, additive: bool) -> None:
        if self.view is not None and 0 <= row < len(self.view.sites):
            self.open_neuron(self.view.sites[row], col)

    def _token_cell(self, row: int, col: int, additive: bool) -> None:
        if self.token_site is not None:
            self.open_neuron(self.token_site, col)

    def show_tokens(self, site: str) -> None:
        got = pres.token_rows(self.result, site) if self.result is not None else None
        if got is None:
            return
        self.token_site = site
        rows, labels = got
        r = self.view.site_row(site)
        title = f"effect: token × neuron, {self.view.row_labels[r] if r is not None else site}"
        self.w.attribute_results.show_tokens(rows, labels, pres.symmetric_levels(rows), title)

    def effect_text(self, site: str, neuron: int) -> str | None:
        """The inspected neuron's effect in the current result (None where it has none)."""
        if self.result is None or site not in self.result.effects:
            return None
        e = float(self.result.effects[site][neuron])
        if e != e:          # NaN: not scored
            return None
        ex = self.view.exact().get((site, neuron)) if self.view else None
        extra = f", exact {ex:+.4f}" if ex is not None else ""
        return f"attribution effect {e:+.4f}{extra} on {self.result.metric_text}"

    # -- dashboards ------------------------------------------------------------------------------
    def show_dashboard(self, site: str, neuron: int) -> None:
        """The inspected neuron's corpus dashboard (read on the worker)."""
        w = self.w
        if w.model_info is None or w.family.kind != "lm":
            w.dashboard.clear()
            return
        self._dash_rid += 1
        rid = self._dash_rid
        w.jobs.submit(jobs_attribute.dashboard(site, neuron),
                      done=lambda r: self._dashboard(rid, r),
                      failed=lambda msg: self._dashboard(rid, {"error": msg}))

    def _index_built(self) -> None:
        """A build finished: the inspected neuron's examples at once, the tab brought forward."""
        self._dash_shown = False
        if self._inspected is not None:
            self.show_dashboard(*self._inspected)

    def _dashboard(self, rid: int, r: dict) -> None:
        if rid != self._dash_rid:
            return                          # a later click's dashboard is on its way
        if not self._index_checked:         # after the first dashboard (which hashed the
            self._index_checked = True      # weights already): what the build bar offers
            self.index.refresh()
        d = self.w.dashboard
        if "dashboard" in r:
            d.show_dashboard(r["dashboard"])
            if not self._dash_shown:        # an index exists: show its examples, once
                self._dash_shown = True
                self.w.inspector.lower.setCurrentWidget(d)
        elif "missing" in r:
            d.show_missing(r["missing"])
        elif "error" in r:
            d.show_message(r["error"])
        else:
            d.clear()
