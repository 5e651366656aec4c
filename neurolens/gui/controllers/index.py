"""Building the loaded model's neuron index from the dashboard: the corpus the user picks (a
text or JSONL file, a folder, or the corpus of the index shipped beside the model), the build
on the worker with progress, the time left and cancel, "Resume index" for a partial one, and
the inspected neuron's examples as soon as it is done. Bad input is one line in the bar and the
status bar (no dialog), and nothing is written."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from neurolens.gui import jobs_attribute
from neurolens.gui.controllers import Controller
from neurolens.gui.presenters import index as pres


class IndexController(Controller):
    def __init__(self, window, on_built=None):
        super().__init__(window)
        self.info: dict = {"state": "none"}      # the last index_status() result
        self.building = False
        self.chunk_docs = 256                    # documents per chunk (one file written each)
        self.messages: list[str] = []            # one-line messages shown (tests)
        self.last: dict | None = None            # the last build's result
        self.on_built = on_built                 # called after a build that finished
        self._t0 = 0.0
        self._base: int | None = None
        self._rid = 0
        self.note: str | None = None             # a line that stays until the next build

    def wire(self, view) -> None:
        self.view = view
        view.buildRequested.connect(self.build_clicked)
        view.fileRequested.connect(lambda: self.choose("file"))
        view.folderRequested.connect(lambda: self.choose("folder"))
        view.defaultRequested.connect(self.build_default)
        view.cancelRequested.connect(self.cancel)

    # -- state ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Ask the worker what index the loaded model has (after its first dashboard, and after
        each build)."""
        self._rid += 1
        rid = self._rid
        self.w.jobs.submit(jobs_attribute.index_status(),
                           done=lambda r: self._status(rid, r),
                           failed=lambda msg: self._status(rid, {"error": msg}))

    def _status(self, rid: int, r: dict) -> None:
        if rid != self._rid or r.get("skip") or self.building:
            return
        self.info = r
        demo = self._is_demo()
        default = pres.default_label(r["default"], demo) if r.get("default") else None
        self.view.set_build_state(pres.button_text(r.get("state", "none")),
                                  self.note or pres.status_text(r), default)

    def _is_demo(self) -> bool:
        from neurolens.resources import model_path
        name = (self.w.model_info or {}).get("name", "")
        try:
            return bool(name) and Path(name).resolve() == model_path().resolve()
        except OSError:
            return False

    # -- starting ------------------------------------------------------------------------------
    def build_clicked(self) -> None:
        """The button: resume a partial index, else ask for the corpus (the one offered first
        preselected)."""
        if self.info.get("state") == "partial" and not self.info.get("error"):
            self.start(None)
        else:
            self.choose("file")

    def build_default(self) -> None:
        if self.info.get("default"):
            self.start(list(self.info["default"]))

    def choose(self, what: str) -> None:
        paths = self.ask_corpus(what)
        if paths:
            self.start(paths)

    def ask_corpus(self, what: str) -> list[str]:
        """The file dialog: text or JSONL files, or a folder of .txt files."""
        if what == "folder":
            d = QFileDialog.getExistingDirectory(self.w, "Folder of .txt files to index")
            return [d] if d else []
        start = (self.info.get("default") or [""])[0]
        got, _ = QFileDialog.getOpenFileNames(
            self.w, "Corpus to index (a document per line, or JSONL with a \"text\" field)",
            start, "Text or JSONL (*.txt *.jsonl *.ndjson);;All files (*)")
        return list(got)

    def _can_start(self) -> bool:
        w = self.w
        if w.model_info is None or w.family.kind != "lm":
            self.say("the neuron index works on language models: load one first")
            return False
        if self.building or w.running or w.attribution.busy:
            self.say("busy: wait for the current run to finish (or cancel it)")
            return False
        return True

    def start(self, corpus: list[str] | None) -> None:
        """Build over ``corpus`` (None: resume the partial index over its own corpus)."""
        if not self._can_start():
            return
        self.building, self._base, self.last, self.note = True, None, None, None
        v = self.view
        v.set_building(True)
        v.build_status.setText("reading the corpus…")
        self.w.set_busy(True, "building the neuron index…")
        self.w.progress_bar.setRange(0, 0)
        self.w.jobs.submit(jobs_attribute.build(corpus, chunk_docs=self.chunk_docs),
                           started=self._started, progress=self._progress,
                           done=self._done, failed=self._failed, cancelled=self._cancelled)

    def cancel(self) -> None:
        if self.building:
            self.w.worker.cancel_token.cancel()
            self.view.build_status.setText("cancelling after the current batch…")

    # -- what the worker sends ------------------------------------------------------------------
    def _started(self, total: int) -> None:
        if total > 0:
            self.view.show_progress(0, total, "")

    def _progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._base is None:                  # the first notice: the tokens already indexed
            self._base, self._t0 = done, now
        left = pres.seconds_left(done, total, self._base, now - self._t0)
        self.view.show_progress(done, total, pres.progress_text(done, total, left))
        self.w.progress_bar.setRange(0, max(1, total))      # the status bar's, too
        self.w.progress_bar.setValue(min(done, total))

    def _end(self, text: str) -> None:
        self.building = False
        self.view.set_building(False)
        self.w.progress_bar.setRange(0, 100)
        self.w.progress_bar.setValue(100 if self.last is not None else 0)
        if self.w.running:                      # a run started from the menu meanwhile
            self.w.status.setText(text)
        else:
            self.w.set_busy(False, text)
        self.refresh()

    def _done(self, r: dict) -> None:
        if "error" in r:
            self._end("index not built")
            self.say(r["error"])
            return
        self.last, self.note = r, pres.done_text(r)
        self._end(self.note)
        if self.on_built is not None:
            self.on_built()

    def _failed(self, msg: str) -> None:
        self._end("index build failed")
        self.say(msg)

    def _cancelled(self) -> None:
        self._end("index build cancelled: the finished chunks are kept")
        if self.on_built is not None:           # they are an index already: show it
            self.on_built()

    def say(self, msg: str) -> None:
        """One line in the bar and the status bar (non-modal)."""
        line = msg.strip().splitlines()[0] if msg.strip() else msg
        self.messages.append(line)
        self.note = line
        self.view.build_status.setText(line)
        self.w.status.setText(line)
