"""Attention heads on screen: the head summaries over the typed prompt and the prompt list (a
job on the worker, eager attention: the status line says so), the layer x head grid of the
chosen summary or its set difference A - B, a clicked head's pattern for the chosen prompt
(another job), the selected heads as prune / scale edits in the edit list, and the attribution of
the Attribute form's answer to every query head (a job with progress and cancel) as a diverging
layer x head map whose cells open their head like the summaries' do."""

from __future__ import annotations

from neurolens.engine.attention import EAGER_NOTE
from neurolens.errors import SpecError
from neurolens.gui import jobs_attention
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters import attention as pres
from neurolens.gui.presenters.attribute import FormError


class AttentionController(Controller):
    def __init__(self, window):
        super().__init__(window)
        self.summary = None                 # the engine's HeadSummary
        self.attributed = None              # the engine's per-head Attribution
        self.prompts: list[str] = []        # the summary's prompts (the prompt combo)
        self.detail = None                  # the engine's HeadDetail of the open prompt/layer
        self.head: tuple[int, int] | None = None          # the open head
        self.selected: list[tuple[int, int]] = []         # heads for edits
        self.busy = False
        self._detail_rid = 0
        self._shot = "start"

    def wire(self) -> None:
        v = self.w.attention_view
        v.computeRequested.connect(self.compute)
        v.cancelRequested.connect(self.cancel)
        v.choiceChanged.connect(self.redraw)
        v.promptChanged.connect(lambda *_: self._load_detail())
        v.grid.cellClicked.connect(self.open_head)
        v.editRequested.connect(self.add_edits)
        v.selection.setText(pres.selection_text([]))

    def set_family(self, fam) -> None:
        """A model loaded: the tab is for language models; old summaries go."""
        w = self.w
        w.center_tabs.setTabVisible(w.center_tabs.indexOf(w.attention_view), fam.kind == "lm")
        self.summary, self.detail, self.head, self.selected = None, None, None, []
        self.attributed = None
        self.prompts = []
        w.attention_view.set_prompts([])
        w.attention_view.pattern.show_empty()
        w.attention_view.selection.setText(pres.selection_text([]))
        self.redraw()

    # -- summaries -------------------------------------------------------------------------------
    def _start(self, text: str, eager: bool = True) -> bool:
        w = self.w
        if self.busy:
            return False
        if w.model_info is None:
            w.show_error("No model loaded: use File ▸ Open model.")
            return False
        if w.running or w.loading:
            w.status.setText("a run is in progress: the attention views wait until it ends")
            return False
        self.busy = True
        w.attention_view.set_busy(True)
        w.set_busy(True, f"{text} ({EAGER_NOTE})" if eager else text)
        return True

    def _end(self, text: str | None) -> None:
        self.busy = False
        self.w.attention_view.set_busy(False)
        self.w.set_busy(False, text)

    def compute(self) -> None:
        """The Compute button: the head summaries, or with the attribution entry chosen, the
        per-head attribution."""
        if self.w.attention_view.attributing():
            self.attribute_heads()
            return
        w = self.w
        prompts, sets = pres.summary_prompts(w.prompt_list.rows, w.prompt_edit.toPlainText(),
                                             w.set_name.text())
        if not prompts:
            w.show_error("Type a prompt (or load a prompt set) first.")
            return
        if not self._start(f"head summaries over {len(prompts)} prompt(s)…"):
            return
        w.progress_bar.setRange(0, 100)
        w.progress_bar.setValue(0)
        edits = w.current_edits()
        job = jobs_attention.head_summaries(prompts, sets, edits,
                                            w.attention_view.induction_len.value())
        w.jobs.submit(job, progress=self._progress, done=self._summarised,
                      failed=self._failed, cancelled=lambda: self._end("head summaries "
                                                                        "cancelled"))

    def cancel(self) -> None:
        if self.busy:
            self.w.worker.cancel_token.cancel()

    def _progress(self, done: int, total: int) -> None:
        self.w.progress_bar.setValue(int(100 * done / max(1, total)))

    def _failed(self, msg: str) -> None:
        self.w.progress_bar.setRange(0, 100)
        self._end("attention: failed")
        self.w.attention_view.info.setText(msg)
        self.w.show_error(f"Attention heads: {msg}")

    def _summarised(self, res: dict) -> None:
        s = res["summary"]
        self.summary, self.prompts, self.detail = s, list(s.prompts), None
        v = self.w.attention_view
        v.set_sets(pres.set_choices(s.set_names))
        v.set_prompts(self.prompts)
        edits = f", with {res['n_edits']} edit(s)" if res["n_edits"] else ""
        v.info.setText(f"{len(s.prompts)} prompts in {len(set(s.set_names))} set(s){edits}; "
                       f"induction on {len(s.induction_tokens)} × {s.induction_len} random "
                       f"tokens repeated; {res['seconds']:.1f} s")
        self.w.progress_bar.setValue(100)
        self._end(f"head summaries: {len(s.prompts)} prompts in {res['seconds']:.1f} s")
        self.redraw()
        if self.head is None or self.head[0] >= s.shape[0] or self.head[1] >= s.shape[1]:
            self.head = pres.showcase_head(s)
            self.selected = [self.head]
        self._mark()
        self._load_detail()

    # -- attribution per head ----------------------------------------------------------------------
    def attribute_heads(self) -> None:
        """Attribute the Attribute form's answer (its prompt, contrast and corruption) to every
        query head with the tab's method, on the worker."""
        w = self.w
        if w.model_info is None:
            w.show_error("No model loaded: use File ▸ Open model.")
            return
        w.attribution.refresh_choices()
        try:
            req = pres.head_request(w.attribution.request(),
                                    w.attention_view.attr_method.currentData())
        except FormError as e:
            w.show_error(f"{e} (the Attribute tab's form)")
            return
        how = pres.HEAD_METHODS[req.method]
        if not self._start(f"attributing to every head ({how})…", eager=False):
            return
        w.progress_bar.setRange(0, 0)
        w.jobs.submit(jobs_attention.head_attribution(req, w.current_edits()),
                      progress=self._attr_progress, done=self._attributed,
                      failed=self._failed,
                      cancelled=self._attr_cancelled)

    def _attr_cancelled(self) -> None:
        self.w.progress_bar.setRange(0, 100)
        self.w.progress_bar.setValue(0)
        self._end("head attribution cancelled")

    def _attr_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.w.progress_bar.setRange(0, 100)
            self._progress(done, total)

    def _attributed(self, out: dict) -> None:
        res = self.attributed = out["result"]
        v = self.w.attention_view
        if not self.prompts:                    # no summaries yet: open heads on its prompts
            self.prompts, self.detail = list(res.prompts), None
            v.set_prompts(self.prompts)
        v.info.setText(pres.attribution_text(res, out["seconds"]))
        self.w.progress_bar.setRange(0, 100)
        self.w.progress_bar.setValue(100)
        self._end(f"head attribution: {len(res.prompts)} prompt(s) in {out['seconds']:.1f} s")
        self.redraw()
        if self.head is None:
            self.head = pres.showcase_attributed(res)
            self.selected = [self.head]
            self._mark()
            self._load_detail()

    def redraw(self) -> None:
        v = self.w.attention_view
        gv = pres.grid_view(self.summary, v.choice(), self.attributed)
        if gv.matrix is None:
            v.grid.set_message(gv.message)
            return
        v.grid.set_data(gv.matrix, gv.levels, gv.diverging, gv.title,
                        pres.cell_texts(gv.matrix))
        self._mark()

    def _mark(self) -> None:
        self.w.attention_view.grid.mark(self.selected)
        self.w.attention_view.selection.setText(pres.selection_text(self.selected))

    # -- one head --------------------------------------------------------------------------------
    def open_head(self, layer: int, head: int, additive: bool = False) -> None:
        """Open a head's pattern; shift adds it to the heads selected for edits (or removes
        it)."""
        if additive:
            if (layer, head) in self.selected:
                self.selected.remove((layer, head))
            else:
                self.selected.append((layer, head))
        else:
            self.selected = [(layer, head)]
        self.head = (layer, head)
        self._mark()
        self._load_detail()

    def _load_detail(self) -> None:
        v = self.w.attention_view
        if self.head is None or not self.prompts:
            return
        i = max(0, v.prompt.currentIndex())
        layer = self.head[0]
        d = self.detail
        if d is not None and d.layer == layer and d.prompt == self.prompts[i]:
            self._show_head()
            return
        if not self._start(f"reading the patterns of layer {layer}…"):
            return
        self._detail_rid += 1
        rid = self._detail_rid
        self.w.jobs.submit(jobs_attention.head_pattern(self.prompts[i], layer,
                                                       self.w.current_edits()),
                           done=lambda d: self._detailed(rid, d), failed=self._failed,
                           cancelled=lambda: self._end("cancelled"))

    def _detailed(self, rid: int, d) -> None:
        self._end(f"{pres.head_label(*self.head)}: {len(d.tokens)} tokens")
        if rid != self._detail_rid:
            return
        self.detail = d
        self._show_head()
        # the prompt or head may have changed while the job ran
        self._load_detail()

    def _show_head(self) -> None:
        v = self.w.attention_view
        v.pattern.set_head(pres.head_view(self.detail, self.head[1]))

    # -- edits -----------------------------------------------------------------------------------
    def add_edits(self, op: str, factor: float) -> int:
        w = self.w
        if not self.selected:
            w.status.setText("select heads first (click the grid; shift-click for more)")
            return 0
        try:
            ops = pres.head_ops(self.selected, op, factor)
        except SpecError as e:
            w.status.setText(str(e))
            return 0
        w.edits_panel.add_ops(ops, f"add {op}_head")
        w.status.setText(f"added {op} of {', '.join(pres.head_label(*h) for h in self.selected)}"
                         " to the edits (recompute to see their effect)")
        return len(ops)

    # -- screenshot ------------------------------------------------------------------------------
    def screenshot_step(self) -> bool:
        """The --screenshot mode's steps for this tab: show it, compute, open the showcase
        head; True once its pattern is on screen."""
        w = self.w
        w.center_tabs.setCurrentWidget(w.attention_view)
        if self._shot == "start" and not self.busy and not w.running:
            self._shot = "computing"
            self.compute()
            return False
        return (self.summary is not None and not self.busy
                and w.attention_view.pattern.has_data())
