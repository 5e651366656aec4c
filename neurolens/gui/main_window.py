"""Main window: prompt panel, live heatmaps, key-space scatter, neuron inspector.

The window never computes on the GUI thread: the worker (model) and the projector (PCA/UMAP)
run elsewhere; a 30 Hz timer redraws views from the store's latest data when it changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QListWidgetItem, QMainWindow, QMessageBox,
                               QPlainTextEdit, QProgressBar, QPushButton, QSpinBox, QSplitter,
                               QTabWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
                               QApplication)

from neurolens import __version__
from neurolens.gui import gc_policy
from neurolens.gui.settings import autosave_file, user_settings
from neurolens.evals.skills import SKILLS
from neurolens.gui.edit_model import EditModel
from neurolens.gui.views.compare_view import CompareView
from neurolens.gui.views.edits_panel import EditsPanel
from neurolens.gui.views.heatmap import Heatmap
from neurolens.gui.views.image_grid import ImageGrid
from neurolens.gui.views.methods_panel import MethodsPanel
from neurolens.gui.views.inspector import NeuronInspector
from neurolens.gui.views.scatter import PALETTE, KeySpaceScatter
from neurolens.gui.worker import Projector, Worker, lower_thread_priority
from neurolens.spec.edits import EditSet
from neurolens.spec.run import DenoiseParams, GenerationParams, RunSpec
from neurolens.spec.session import Session
from neurolens.spec.sites import SITE_KINDS, neuron_label, site_name
from neurolens.store import CaptureStore

SHIPPED_SETS = SKILLS
#: diffusion prompt sets shipped with the demo diffusion model: (file, split, set name)
DIFFUSION_SETS = (("diffusion_memorized", None, "memorized"),
                  ("diffusion_ordinary", "eval", "ordinary"),
                  ("diffusion_ordinary", "probe", "ordinary-probe"))
NEURON_KINDS = [k for k in SITE_KINDS if k.startswith("mlp.")]


class OpenModelDialog(QDialog):
    def __init__(self, parent=None, recent: list[str] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Open model")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Local folder or Hugging Face hub id:"))
        row = QHBoxLayout()
        self.edit = QComboBox()
        self.edit.setEditable(True)
        self.edit.addItems(recent or [])
        self.edit.setMinimumWidth(420)
        row.addWidget(self.edit)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        lay.addLayout(row)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Open |
                              QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)

    def _browse(self):
        d = QFileDialog.getExistingDirectory(self, "Model folder")
        if d:
            self.edit.setCurrentText(d)

    def value(self) -> str:
        return self.edit.currentText().strip()


class MainWindow(QMainWindow):
    requestLoad = Signal(str)
    requestRun = Signal(object)
    requestLens = Signal(int, int)
    requestCompare = Signal(object)
    requestExport = Signal(object, str, bool, str)
    requestFit = Signal(str, object, object)

    REFRESH_MS = 33
    AUTOSAVE_MS = 3000

    def __init__(self, settings: QSettings | None = None, autosave_path: str | None = None):
        super().__init__()
        gc_policy.acquire(QApplication.instance(), self)    # until closed and the worker ends
        self.setWindowTitle(f"neurolens {__version__}")
        self.resize(1480, 920)
        self.settings = settings or user_settings()
        self.store = CaptureStore(ring=4096)          # the (edited) run
        self.store_base = CaptureStore(ring=4096)     # the baseline of a comparison
        self.edit_model = EditModel()
        self.prompt_answers: dict[str, str] = {}
        self.compare_result: dict | None = None
        self.export_result: dict | None = None
        self._dirty = False
        self.autosave_path = Path(autosave_path) if autosave_path else autosave_file()
        self.model_info: dict | None = None
        self.prompts: list[tuple[str, str]] = []      # (set name, prompt)
        self.neuron_sets: dict[str, list[tuple[str, int]]] = {}
        self.selection: list[tuple[str, int]] = []    # (site, index)
        self.run_id = 0
        self.running = False
        self.last_outputs: dict | None = None
        self._drawn_version = -1
        self._levels: dict[str, float] = {}
        self._scatter_rid = 0
        self.refresh_times: list[float] = []          # timestamps of redraws (benchmarks)
        self.errors: list[str] = []                   # messages shown to the user
        self._error_box: QMessageBox | None = None
        self._current_req: RunSpec | None = None

        # worker thread owns the model
        self.thread = QThread(self)
        self.thread.setObjectName("neurolens-worker")
        self.worker = Worker(self.store, self.store_base)
        self.worker.moveToThread(self.thread)
        # the worker computes at a lower priority than the event loop (Linux: per-thread nice)
        self.thread.started.connect(lower_thread_priority, Qt.ConnectionType.DirectConnection)
        self.requestLoad.connect(self.worker.load_model)
        self.requestRun.connect(self.worker.run)
        self.requestLens.connect(self.worker.logit_lens)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.loadFailed.connect(self._on_load_failed)
        self.worker.runStarted.connect(self._on_run_started)
        self.worker.progress.connect(self._on_progress)
        self.worker.textUpdated.connect(self._on_text)
        self.worker.runFinished.connect(self._on_run_finished)
        self.worker.runFailed.connect(self._on_run_failed)
        self.worker.runCancelled.connect(self._on_run_cancelled)
        self.worker.lensReady.connect(self._on_lens)
        self.requestCompare.connect(self.worker.compare)
        self.requestExport.connect(self.worker.export)
        self.worker.compareFinished.connect(self._on_compare)
        self.worker.exportFinished.connect(self._on_export)
        self.worker.exportFailed.connect(self._on_export_failed)
        self.requestFit.connect(self.worker.fit_method)
        self.worker.methodFitted.connect(self._on_method_fitted)
        self.worker.methodFailed.connect(self._on_method_failed)
        self.worker.imagesUpdated.connect(self._on_images)
        self.thread.start()
        self.projector = Projector()
        self.projector.ready.connect(self._on_projection)

        self._build_ui()
        self._build_menus()
        self._set_mode(diffusion=False)
        self.timer = QTimer(self)
        self.timer.setInterval(self.REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(self.AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        # everything a session holds marks it changed (prompts, sets and edits do so where
        # they change); a model that finished loading does too, in _on_loaded
        for sig in (self.max_tokens.valueChanged, self.seed.valueChanged,
                    self.temperature.valueChanged, self.sampling.toggled, self.run_list.toggled,
                    self.kind_combo.currentIndexChanged, self.stat_combo.currentIndexChanged,
                    self.show_combo.currentIndexChanged, self.set_a.currentIndexChanged,
                    self.set_b.currentIndexChanged, self.layer_spin.valueChanged):
            sig.connect(self.mark_dirty)
        self._set_busy(False)

    # -- UI ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        # left: prompts and run controls
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(6, 6, 6, 6)
        self.model_label = QLabel("no model")
        self.model_label.setWordWrap(True)
        self.model_label.setStyleSheet("font-weight: bold")
        ll.addWidget(self.model_label)
        ll.addWidget(QLabel("Prompt"))
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Type a prompt, e.g. Compute: 47+38=")
        self.prompt_edit.setMaximumHeight(90)
        self.prompt_edit.textChanged.connect(self.mark_dirty)
        ll.addWidget(self.prompt_edit)
        row = QHBoxLayout()
        self.set_name = QLineEdit("typed")
        self.set_name.setToolTip("prompt set name for added prompts (views colour by set)")
        row.addWidget(QLabel("set"))
        row.addWidget(self.set_name)
        add = QPushButton("Add to list")
        add.clicked.connect(self.add_typed_prompt)
        row.addWidget(add)
        ll.addLayout(row)
        row = QHBoxLayout()
        self.shipped = QComboBox()
        self.shipped.addItems([f"{s} (probe split)" for s in SHIPPED_SETS])
        row.addWidget(self.shipped)
        self.shipped_n = QSpinBox()
        self.shipped_n.setRange(1, 400)
        self.shipped_n.setValue(24)
        self.shipped_n.setToolTip("how many prompts to take")
        row.addWidget(self.shipped_n)
        b = QPushButton("Load")
        b.clicked.connect(self._load_shipped_clicked)
        row.addWidget(b)
        ll.addLayout(row)
        row = QHBoxLayout()
        b = QPushButton("Load file…")
        b.clicked.connect(self._load_file_dialog)
        row.addWidget(b)
        b = QPushButton("Clear list")
        b.clicked.connect(self.clear_prompts)
        row.addWidget(b)
        ll.addLayout(row)
        self.prompt_table = QTableWidget(0, 2)
        self.prompt_table.setHorizontalHeaderLabels(["set", "prompt"])
        self.prompt_table.horizontalHeader().setStretchLastSection(True)
        self.prompt_table.verticalHeader().setVisible(False)
        ll.addWidget(self.prompt_table, 1)

        gen = QGroupBox("Generation")
        gf = QFormLayout(gen)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(0, 4096)
        self.max_tokens.setValue(12)
        gf.addRow("max new tokens", self.max_tokens)
        self.sampling = QCheckBox("sample (else greedy)")
        gf.addRow(self.sampling)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 5.0)
        self.temperature.setValue(1.0)
        self.temperature.setSingleStep(0.1)
        gf.addRow("temperature", self.temperature)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        gf.addRow("seed", self.seed)
        self.stop_eos = QCheckBox("stop at end of text")
        self.stop_eos.setChecked(True)
        gf.addRow(self.stop_eos)
        self.stop_answer = QCheckBox("stop at the end of each set answer")
        self.stop_answer.setToolTip("prompts loaded from a set with answers stop where their "
                                    "answer ends (a line, or a program body)")
        self.stop_answer.setChecked(True)
        gf.addRow(self.stop_answer)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(20)
        gf.addRow("denoising steps", self.steps_spin)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 30.0)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setValue(3.0)
        gf.addRow("guidance scale", self.guidance_spin)
        self.run_list = QCheckBox("run the prompt list (else the typed prompt)")
        gf.addRow(self.run_list)
        self._gen_form = gf
        ll.addWidget(gen)
        row = QHBoxLayout()
        self.run_btn = QPushButton("Run")
        self.run_btn.setShortcut("Ctrl+Return")
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.setToolTip("run with and without the enabled edits, side by side")
        self.compare_btn.clicked.connect(self.compare)
        row.addWidget(self.run_btn)
        row.addWidget(self.compare_btn)
        row.addWidget(self.cancel_btn)
        ll.addLayout(row)

        # centre: view controls + views
        centre = QWidget()
        cl = QVBoxLayout(centre)
        cl.setContentsMargins(2, 2, 2, 2)
        ctl = QHBoxLayout()
        ctl.addWidget(QLabel("site"))
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(NEURON_KINDS)
        self.kind_combo.setCurrentText("mlp.hook_post")
        self.kind_combo.currentIndexChanged.connect(self._view_changed)
        ctl.addWidget(self.kind_combo)
        ctl.addWidget(QLabel("statistic"))
        self.stat_combo = QComboBox()
        self.stat_combo.addItems(["mean activation", "set difference A − B"])
        self.stat_combo.currentIndexChanged.connect(self._view_changed)
        ctl.addWidget(self.stat_combo)
        self.set_a = QComboBox()
        self.set_b = QComboBox()
        for c in (self.set_a, self.set_b):
            c.currentIndexChanged.connect(self._view_changed)
            c.setMinimumWidth(90)
        ctl.addWidget(QLabel("A"))
        ctl.addWidget(self.set_a)
        ctl.addWidget(QLabel("B"))
        ctl.addWidget(self.set_b)
        ctl.addWidget(QLabel("show"))
        self.show_combo = QComboBox()
        self.show_combo.addItems(["edited run", "baseline", "difference"])
        self.show_combo.setToolTip("after Compare: the edited run, the baseline, or edited − "
                                   "baseline")
        self.show_combo.currentIndexChanged.connect(self._view_changed)
        ctl.addWidget(self.show_combo)
        ctl.addSpacing(16)
        self.layer_label = QLabel("token view: layer")
        ctl.addWidget(self.layer_label)
        self.layer_spin = QSpinBox()
        self.layer_spin.valueChanged.connect(self._view_changed)
        ctl.addWidget(self.layer_spin)
        self.step_label = QLabel("step")
        ctl.addWidget(self.step_label)
        self.step_spin = QSpinBox()
        self.step_spin.setRange(-1, 999)
        self.step_spin.setValue(-1)
        self.step_spin.setSpecialValueText("all")
        self.step_spin.setToolTip("diffusion: denoising step the layer heatmap shows (all = mean "
                                  "over steps)")
        self.step_spin.valueChanged.connect(self._view_changed)
        ctl.addWidget(self.step_spin)
        ctl.addWidget(QLabel("prompt"))
        self.prompt_spin = QSpinBox()
        self.prompt_spin.valueChanged.connect(self._view_changed)
        ctl.addWidget(self.prompt_spin)
        ctl.addStretch(1)
        cl.addLayout(ctl)

        vsplit = QSplitter(Qt.Orientation.Vertical)
        top = QSplitter(Qt.Orientation.Horizontal)
        self.layer_map = Heatmap("layer × neuron", "neuron", "layer")
        self.layer_map.cellClicked.connect(self._on_layer_cell)
        self.layer_map.cellsSelected.connect(self._on_layer_cells)
        top.addWidget(self.layer_map)
        self.scatter = KeySpaceScatter()
        self.scatter.lassoSelected.connect(self.define_prompt_set)
        top.addWidget(self.scatter)
        top.setSizes([820, 420])
        vsplit.addWidget(top)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        self.token_map = Heatmap("token × neuron", "neuron", "token")
        self.token_map.cellClicked.connect(self._on_token_cell)
        self.token_map.cellsSelected.connect(self._on_token_cells)
        bl.addWidget(self.token_map, 1)
        self.output_label = QLabel("")
        self.output_label.setWordWrap(True)
        self.output_label.setTextFormat(Qt.TextFormat.RichText)
        self.output_label.setStyleSheet("font-family: monospace; padding: 4px")
        bl.addWidget(self.output_label)
        bsplit = QSplitter(Qt.Orientation.Horizontal)
        bsplit.addWidget(bottom)
        self.image_grid = ImageGrid()
        bsplit.addWidget(self.image_grid)
        bsplit.setSizes([620, 520])
        vsplit.addWidget(bsplit)
        vsplit.setSizes([470, 380])
        self.center_tabs = QTabWidget()
        self.center_tabs.addTab(vsplit, "Neurons")
        self.compare_view = CompareView()
        self.center_tabs.addTab(self.compare_view, "Compare")

        cl.addWidget(self.center_tabs, 1)

        # right: inspector + neuron sets
        right = QTabWidget()
        self.right_tabs = right
        inspect_tab = QWidget()
        rl = QVBoxLayout(inspect_tab)
        rl.setContentsMargins(4, 4, 4, 4)
        self.inspector = NeuronInspector()
        rl.addWidget(self.inspector, 3)
        rl.addWidget(QLabel("Selection"))
        self.selection_label = QLabel("none (click a cell; shift-click or shift-drag for many)")
        self.selection_label.setWordWrap(True)
        rl.addWidget(self.selection_label)
        row = QHBoxLayout()
        self.new_set_name = QLineEdit()
        self.new_set_name.setPlaceholderText("neuron set name")
        row.addWidget(self.new_set_name)
        b = QPushButton("Save as set")
        b.clicked.connect(lambda: self.save_selection_as_set(self.new_set_name.text()))
        row.addWidget(b)
        rl.addLayout(row)
        self.sets_list = QListWidget()
        self.sets_list.itemDoubleClicked.connect(self._select_saved_set)
        rl.addWidget(self.sets_list, 1)
        right.addTab(inspect_tab, "Inspect")
        self.edits_panel = EditsPanel(self.edit_model)
        self.edits_panel.selection_provider = lambda: list(self.selection)
        self.edits_panel.changed.connect(self._edits_changed)
        right.addTab(self.edits_panel, "Edits")
        self.methods_panel = MethodsPanel()
        self.methods_panel.fitRequested.connect(self.fit_method)
        right.addTab(self.methods_panel, "Methods")

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(centre)
        split.addWidget(right)
        split.setSizes([330, 840, 310])
        self.setCentralWidget(split)

        self.status = QLabel("starting…")
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(260)
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().addPermanentWidget(self.progress_bar)

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        a = QAction("&Open model…", self)
        a.setShortcut("Ctrl+O")
        a.triggered.connect(self._open_model_dialog)
        m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self._fill_recent()
        m.addSeparator()
        for text, fn, key in (("&Save session…", self._save_session_dialog, "Ctrl+S"),
                              ("Open s&ession…", self._open_session_dialog, None),
                              (None, None, None),
                              ("Load &prompts…", self._load_file_dialog, None),
                              ("&Import edits…", self._import_edits_dialog, None),
                              ("E&xport edits…", self._export_edits_dialog, None),
                              ("Export edited &model…", self._export_model_dialog, "Ctrl+E")):
            if text is None:
                m.addSeparator()
                continue
            a = QAction(text, self)
            a.triggered.connect(fn)
            if key:
                a.setShortcut(key)
            m.addAction(a)
        m.addSeparator()
        a = QAction("&Quit", self)
        a.setShortcut("Ctrl+Q")
        a.triggered.connect(self.close)
        m.addAction(a)
        r = self.menuBar().addMenu("&Run")
        for text, fn, key in (("&Run", self.run, "Ctrl+R"),
                              ("&Compare with / without edits", self.compare, "Ctrl+Shift+R"),
                              ("C&ancel", self.cancel, "Esc")):
            a = QAction(text, self)
            a.triggered.connect(fn)
            a.setShortcut(key)
            r.addAction(a)
        e = self.menuBar().addMenu("&Edit")
        for text, fn, key in (("&Undo edit", lambda: self.edits_panel.undo(), "Ctrl+Z"),
                              ("&Redo edit", lambda: self.edits_panel.redo(), "Ctrl+Shift+Z")):
            a = QAction(text, self)
            a.triggered.connect(fn)
            a.setShortcut(key)
            e.addAction(a)
        h = self.menuBar().addMenu("&Help")
        a = QAction("&About neurolens", self)
        a.triggered.connect(self.show_about)
        h.addAction(a)

    # -- model -----------------------------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        v = self.settings.value("recent_models", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def _remember(self, name: str) -> None:
        rec = [name] + [r for r in self.recent_models() if r != name]
        self.settings.setValue("recent_models", rec[:10])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for r in self.recent_models():
            a = QAction(r, self)
            a.triggered.connect(lambda _=False, r=r: self.open_model(r))
            self.recent_menu.addAction(a)
        self.recent_menu.setEnabled(bool(self.recent_models()))

    def _open_model_dialog(self) -> None:
        d = OpenModelDialog(self, self.recent_models())
        if d.exec() == QDialog.DialogCode.Accepted and d.value():
            self.open_model(d.value())

    def open_model(self, name: str | None = None) -> None:
        if self.running:
            self.show_error("A run is in progress: cancel it before loading another model.")
            return
        self._set_busy(True, f"loading {name or 'the demo model'}…")
        self.progress_bar.setRange(0, 0)  # indeterminate while loading
        self._loading_name = name or ""
        self.requestLoad.emit(name or "")

    def _on_loaded(self, info: dict) -> None:
        self.mark_dirty()
        gc_policy.GuiThreadCollector.freeze()     # the model's objects: out of the collector's way
        self.model_info = info
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(100)
        short = Path(info["name"]).name or info["name"]
        self._set_mode(diffusion=self.diffusion_info(info))
        what = "FFN blocks" if self.diffusion else "layers"
        self.model_label.setText(f"{short} · {info['model_type']} · {info['n_layers']} {what} · "
                                 f"{info['n_params'] / 1e6:.1f}M params")
        self.layer_spin.setRange(0, max(0, info["n_layers"] - 1))
        layer = self._session_layer if 0 <= self._session_layer < info["n_layers"] else \
            info["n_layers"] - 1
        self.layer_spin.setValue(max(0, layer))
        kinds = (["ff.hook_post"] if self.diffusion else
                 sorted({s.split(".", 2)[2] for s in info["sites"]} & set(NEURON_KINDS),
                        key=NEURON_KINDS.index))
        cur = self.kind_combo.currentText()
        self.kind_combo.blockSignals(True)
        self.kind_combo.clear()
        self.kind_combo.addItems(kinds)
        self.kind_combo.setCurrentText(cur if cur in kinds else kinds[0])
        self.kind_combo.blockSignals(False)
        self._preshape_maps()
        self._remember(self._loading_name or info["name"])
        notes = "; ".join(info.get("notes", []))
        self._set_busy(False, f"loaded {info['name']}" + (f" ({notes})" if notes else ""))
        if self._pending_run_after_load:
            self._pending_run_after_load = False
            self.run()

    _pending_run_after_load = False
    _loading_name = ""

    def _on_load_failed(self, msg: str) -> None:
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self._set_busy(False, "load failed")
        self.show_error(f"Could not load the model.\n\n{msg}")

    # -- prompts ---------------------------------------------------------------------------------------
    def add_prompts(self, prompts: list[str], set_name: str) -> None:
        set_name = set_name.strip() or "prompts"
        for p in prompts:
            self.prompts.append((set_name, p))
        self._fill_prompt_table()
        self.mark_dirty()

    def add_typed_prompt(self) -> None:
        text = self.prompt_edit.toPlainText()
        if text.strip():
            self.add_prompts([text], self.set_name.text())
            self.run_list.setChecked(True)

    def _load_shipped_clicked(self) -> None:
        i, n = self.shipped.currentIndex(), self.shipped_n.value()
        if self.diffusion:
            f, split, name = DIFFUSION_SETS[i]
            self.load_shipped_set(f, n, split=split, set_name=name)
        else:
            self.load_shipped_set(SHIPPED_SETS[i], n)

    def load_shipped_set(self, skill: str, n: int = 24, split: str | None = "probe",
                         set_name: str | None = None) -> None:
        from neurolens.evals.skills import load_prompt_set
        try:
            rows = load_prompt_set(skill, split, limit=n)
        except Exception as e:  # noqa: BLE001
            self.show_error(str(e))
            return
        self._add_answered([(r["prompt"], r.get("answer")) for r in rows], set_name or skill)

    def load_prompt_file(self, path: str, set_name: str | None = None) -> None:
        from neurolens.spec.prompts import read_prompt_rows
        try:
            rows = read_prompt_rows(path)
        except Exception as e:  # noqa: BLE001
            self.show_error(str(e))
            return
        self._add_answered(rows, set_name or Path(path).stem)

    def _add_answered(self, rows: list[tuple[str, str | None]], set_name: str) -> None:
        """Add (prompt, answer) rows as a set to run; the answers, where given, stop, score
        (Compare) and probe (Neuron Adjust) their prompts."""
        for prompt, answer in rows:
            if answer is not None:
                self.prompt_answers[prompt] = answer
        self.add_prompts([prompt for prompt, _ in rows], set_name)
        self.run_list.setChecked(True)

    def _load_file_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Load prompts", "",
                                           "Prompts (*.jsonl *.txt);;All files (*)")
        if f:
            self.load_prompt_file(f)

    def clear_prompts(self) -> None:
        self.prompts.clear()
        self._fill_prompt_table()
        self.mark_dirty()

    def _fill_prompt_table(self) -> None:
        t = self.prompt_table
        t.setRowCount(len(self.prompts))
        names = self.set_names()
        for r, (s, p) in enumerate(self.prompts):
            a = QTableWidgetItem(s)
            col = PALETTE[names.index(s) % len(PALETTE)]
            a.setForeground(QColor(*col))
            t.setItem(r, 0, a)
            t.setItem(r, 1, QTableWidgetItem(p.replace("\n", " ⏎ ")))
        for combo in (self.set_a, self.set_b):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        if len(names) > 1 and self.set_b.currentText() == self.set_a.currentText():
            self.set_b.setCurrentIndex(1)
        if hasattr(self, "methods_panel"):
            self.methods_panel.set_names(names)

    def set_names(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.prompts))

    def define_prompt_set(self, indices: list[int], name: str | None = None) -> str:
        """Lasso result: move the chosen prompts of the last run into a new named set."""
        req = self._current_req
        if req is None:
            return ""
        k = 1
        existing = set(self.set_names())
        while name is None or name in existing:
            name = f"lasso {k}"
            k += 1
        chosen = {req.prompts[i] for i in indices if i < len(req.prompts)}
        self.prompts = [(name if p in chosen else s, p) for s, p in self.prompts]
        self._fill_prompt_table()
        self.status.setText(f"{len(indices)} prompts now form the set '{name}'")
        return name

    # -- runs ------------------------------------------------------------------------------------------
    def build_request(self) -> RunSpec | None:
        if self.run_list.isChecked() and self.prompts:
            sets = tuple(s for s, _ in self.prompts)
            prompts = tuple(p for _, p in self.prompts)
        else:
            text = self.prompt_edit.toPlainText()
            if not text.strip():
                return None
            sets, prompts = (self.set_name.text().strip() or "typed",), (text,)
        answers = tuple(self.prompt_answers.get(p) for p in prompts)
        row_stop = None
        if self.stop_answer.isChecked() and any(a is not None for a in answers):
            from neurolens.evals.skills import answer_stop
            row_stop = tuple((answer_stop(a),) if a is not None else () for a in answers)
        params = self.generation_params()
        params.row_stop = row_stop
        kinds = tuple(dict.fromkeys(["mlp.hook_post", self.kind_combo.currentText()]))
        self.run_id += 1
        return RunSpec(prompts=prompts, set_names=sets, site_kinds=kinds, generation=params,
                       denoise=self.denoise_params(), edits=self.current_edits(),
                       run_id=self.run_id,
                       answers=answers)

    def generation_params(self) -> GenerationParams:
        """The Generation form as data."""
        return GenerationParams(max_new_tokens=self.max_tokens.value(),
                                do_sample=self.sampling.isChecked(),
                                temperature=self.temperature.value(), seed=self.seed.value(),
                                batch_size=16, ignore_eos=not self.stop_eos.isChecked())

    def set_generation_params(self, g: GenerationParams) -> None:
        """Fill the Generation form from data (the inverse of ``generation_params``)."""
        self.max_tokens.setValue(g.max_new_tokens)
        self.sampling.setChecked(g.do_sample)
        self.temperature.setValue(g.temperature)
        self.seed.setValue(g.seed)
        self.stop_eos.setChecked(not g.ignore_eos)

    def set_run_list(self, on: bool) -> None:
        """Run the prompt list (True) or the typed prompt (False)."""
        self.run_list.setChecked(on)

    def denoise_params(self) -> DenoiseParams:
        """The diffusion settings of the form as data (the seed is the form's one seed)."""
        return DenoiseParams(steps=self.steps_spin.value(), guidance=self.guidance_spin.value(),
                             seed=self.seed.value())

    def current_edits(self) -> EditSet | None:
        """An immutable snapshot of the enabled edits for a run."""
        return self.edit_model.enabled_set()

    def run(self) -> None:
        if self.running:
            return
        if self.model_info is None:
            if self.worker.lm is None and self.progress_bar.maximum() == 0:
                self._pending_run_after_load = True
                return
            self.show_error("No model loaded: use File ▸ Open model.")
            return
        req = self.build_request()
        if req is None:
            self.show_error("Type a prompt (or load a prompt set) first.")
            return
        self._current_req = req
        self._levels.clear()
        self.last_outputs = None
        self.output_label.setText("")
        # a plain run has no baseline: drop a stale comparison and show the run itself
        self.store_base.clear()
        self.show_combo.setCurrentIndex(0)
        self.prompt_spin.setRange(0, len(req.prompts) - 1)
        self.running = True
        self._set_busy(True, f"running {len(req.prompts)} prompt(s)…")
        self.requestRun.emit(req)

    def cancel(self) -> None:
        if self.running:
            self.worker.cancel_token.cancel()  # thread-safe flag: the worker stops within a token
            self.status.setText("cancelling…")

    def _on_run_started(self, rid: int, total: int) -> None:
        self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(0)

    def _on_progress(self, rid: int, done: int, total: int) -> None:
        if rid == self.run_id:
            self.progress_bar.setMaximum(max(1, total))
            self.progress_bar.setValue(done)

    def _on_text(self, rid: int, texts: dict) -> None:
        if rid != self.run_id:
            return
        self._texts = texts
        self._show_output()

    _texts: dict = {}

    def _show_output(self) -> None:
        req = self._current_req
        if req is None:
            return
        i = min(self.prompt_spin.value(), len(req.prompts) - 1)
        from html import escape
        gen = self._texts.get(i, "")
        self.output_label.setText(
            f"<span style='color:#555'>{escape(req.prompts[i])}</span>"
            f"<span style='background:#fff3b0'>{escape(gen)}</span>".replace("\n", "⏎<br>"))

    def _on_images(self, rid: int, step: int, images) -> None:
        if rid != self.run_id or images is None:
            return
        req = self._current_req
        n = req.denoise.steps if req is not None else step
        what = "final images" if step >= n else f"denoising step {step + 1}/{n} (predicted image)"
        self.last_images = images
        self.image_grid.show_rows([images], f"{what}; seeds from {self.seed.value()}")

    last_images = None

    def _on_run_finished(self, rid: int, summary: dict) -> None:
        if rid != self.run_id:
            return
        self.running = False
        self.last_outputs = summary
        self.progress_bar.setValue(self.progress_bar.maximum())
        self._set_busy(False, f"done in {summary['seconds']:.2f}s")
        self.refresh(force=True)
        self.update_scatter()

    def _on_run_failed(self, rid: int, msg: str) -> None:
        self.running = False
        self._set_busy(False, "run failed")
        self.show_error(f"The run failed.\n\n{msg}")

    def _on_run_cancelled(self, rid: int) -> None:
        self.running = False
        self._set_busy(False, "cancelled")
        self.refresh(force=True)

    def _set_busy(self, busy: bool, text: str | None = None) -> None:
        self.run_btn.setEnabled(not busy)
        if hasattr(self, "compare_btn"):
            self.compare_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy and self.running)
        if text is not None:
            self.status.setText(text)

    # -- views -----------------------------------------------------------------------------------------
    def _preshape_maps(self) -> None:
        """Before any data: lay the maps out for the shape the loaded model's data will have."""
        info = self.model_info
        if info is None:
            return
        widths = info["sites"]
        if self.diffusion:     # the layer map pads the blocks to the widest
            cols = max(widths.get(s, 0) for s in info["site_list"])
        else:
            cols = widths.get(self.site(0), 0)
        self.layer_map.preshape(info["n_layers"], cols)
        self.token_map.preshape(None, widths.get(self.site(self.layer_spin.value()), 0))

    def _view_changed(self, *_):
        self._levels.clear()
        self._preshape_maps()
        self.refresh(force=True)
        if self.sender() in (self.kind_combo, self.layer_spin) and not self.running:
            self.update_scatter()
        if self.sender() is self.prompt_spin:
            self._show_output()

    @staticmethod
    def diffusion_info(info: dict | None) -> bool:
        return bool(info) and info.get("kind") == "diffusion"

    diffusion = False

    def _set_mode(self, diffusion: bool) -> None:
        """Language model or diffusion pipeline: show the controls that apply."""
        self.diffusion = diffusion
        f = self._gen_form
        for w in (self.max_tokens, self.sampling, self.temperature, self.stop_eos,
                  self.stop_answer):
            f.setRowVisible(w, not diffusion)
        for w in (self.steps_spin, self.guidance_spin):
            f.setRowVisible(w, diffusion)
        self.methods_panel.set_diffusion(diffusion)
        self.step_label.setVisible(diffusion)
        self.image_grid.setVisible(diffusion)
        self.output_label.setVisible(not diffusion)
        self.step_spin.setVisible(diffusion)
        self.prompt_edit.setPlaceholderText("Type a prompt, e.g. a handwritten digit 3"
                                            if diffusion else
                                            "Type a prompt, e.g. Compute: 47+38=")
        self.token_map.set_title("step × neuron (chosen block, prompt)" if diffusion
                                 else "token × neuron")
        self.token_map.plot.setLabel("left", "denoising step" if diffusion else "token")
        self.layer_map.plot.setLabel("left", "UNet FFN block" if diffusion else "layer")
        self.layer_label.setText("step view: block" if diffusion else "token view: layer")
        self.shipped.blockSignals(True)
        self.shipped.clear()
        self.shipped.addItems([f"{name} ({split or 'all'})" for _, split, name in DIFFUSION_SETS]
                              if diffusion else [f"{s} (probe split)" for s in SHIPPED_SETS])
        self.shipped.blockSignals(False)

    def site(self, layer: int) -> str:
        if self.diffusion:
            return self.model_info["site_list"][layer]
        return site_name(layer, self.kind_combo.currentText())

    def site_row(self, site: str) -> int | None:
        """Heatmap row of a site's neurons (None when they are not shown). The map shows one of
        the NEURON_KINDS, and neuron j of any of them is the same FFN neuron j (gate, up
        projection, post-activation), so a site of any of them marks its layer's row."""
        if self.diffusion:
            sl = self.model_info["site_list"]
            return sl.index(site) if site in sl else None
        parts = site.split(".", 2)
        if len(parts) == 3 and parts[2] in NEURON_KINDS:
            return int(parts[1])
        return None

    def _stable(self, key: str, data: np.ndarray) -> tuple[float, float]:
        """Symmetric colour levels that change only when the data outgrow or shrink a lot. The
        scale comes from the non-zero entries: in a sparse (ReLU) layer most activations are
        exactly zero, and a percentile over all of them would be zero too."""
        mag = np.abs(data[np.isfinite(data)])
        mag = mag[mag > 0]
        amp = float(np.percentile(mag, 99.5)) if mag.size else 1.0
        amp = max(amp, 1e-6)
        cur = self._levels.get(key)
        if cur is None or amp > cur * 1.25 or amp < cur * 0.4:
            cur = self._levels[key] = amp
        return (-cur, cur)

    def _step_mean(self, store: CaptureStore, site: str, step: int,
                   set_name: str | None) -> np.ndarray | None:
        """Diffusion: mean over prompts (of a set) of the block's activations at one step."""
        req = self._current_req
        if req is None:
            return None
        vals = []
        for i, s in enumerate(req.set_names):
            if set_name is not None and s != set_name:
                continue
            try:
                vals.append(store.rows(site, i, step=step).reshape(-1))
            except KeyError:
                continue
        return np.mean(vals, axis=0).astype(np.float32) if vals else None

    def _layer_matrix(self, store: CaptureStore) -> np.ndarray | None:
        rows = []
        diff = self.stat_combo.currentIndex() == 1
        a, b = self.set_a.currentText(), self.set_b.currentText()
        step = self.step_spin.value() if self.diffusion else -1
        for layer in range(self.model_info["n_layers"]):
            site = self.site(layer)
            if step >= 0:
                ra = self._step_mean(store, site, step, a if diff else None)
                rb = self._step_mean(store, site, step, b) if diff else 0.0
                if ra is None or rb is None:
                    return None
                rows.append(ra - rb)
            elif diff:
                sa, sb = store.stats(site, a), store.stats(site, b)
                if sa is None or sb is None or not sa.count or not sb.count:
                    return None
                rows.append((sa.mean - sb.mean).astype(np.float32))
            else:
                st = store.stats(site)
                if st is None or not st.count:
                    return None
                rows.append(st.mean.astype(np.float32))
        if not rows:
            return None
        width = max(len(r) for r in rows)   # UNet blocks differ in width: pad with zeros
        return np.stack([np.pad(r, (0, width - len(r))) for r in rows])

    def layer_matrix(self) -> np.ndarray | None:
        """The layer x neuron statistic of the edited run, the baseline, or their difference."""
        if self.model_info is None:
            return None
        mode = self.show_combo.currentIndex()
        if mode == 0:
            return self._layer_matrix(self.store)
        base = self._layer_matrix(self.store_base)
        if mode == 1 or base is None:
            return base
        ed = self._layer_matrix(self.store)
        return None if ed is None else ed - base

    def token_matrix(self) -> tuple[np.ndarray, list[str]] | None:
        req = self._current_req
        if req is None:
            return None
        i = min(self.prompt_spin.value(), len(req.prompts) - 1)
        site = self.site(self.layer_spin.value())
        mode = self.show_combo.currentIndex()
        store = self.store_base if mode == 1 else self.store
        try:
            rows = store.rows(site, i)
            if mode == 2:
                base = self.store_base.rows(site, i)
                n = min(len(rows), len(base))
                rows = rows[:n] - base[:n]
        except KeyError:
            return None
        if self.diffusion:
            if not len(rows):
                return None
            return rows.reshape(len(rows), -1), [f"t{k}" for k in range(len(rows))]
        toks = store.tokens.get(i, [])[: len(rows)]
        return rows, toks

    def refresh(self, force: bool = False) -> None:
        """Timer tick: redraw from the store when it changed (never waits on the worker)."""
        v = self.store.version + self.store_base.version
        if v == self._drawn_version and not force:
            return
        self._drawn_version = v
        m = self.layer_matrix()
        if m is not None:
            self.layer_map.set_data(m, self._stable("layer", m))
            self.layer_map.set_row_labels(
                [self.model_info["aliases"][s] for s in self.model_info["site_list"]]
                if self.diffusion else [f"L{i}" for i in range(m.shape[0])])
        tm = self.token_matrix()
        if tm is not None and len(tm[0]):
            rows, toks = tm
            levels = self._stable("token", rows)
            total = self._token_rows_expected()
            if total > len(rows):
                # while tokens stream the map keeps the run's final height, the rows still to
                # come neutral: its axes and range stay put instead of changing every token
                rows = np.vstack([rows, np.zeros((total - len(rows), rows.shape[1]), rows.dtype)])
                toks = list(toks) + [""] * (total - len(toks))
            self.token_map.set_data(rows, levels)
            self.token_map.set_row_labels([t.replace("\n", "⏎") for t in toks])
        self._mark_selection()
        self.refresh_times.append(time.perf_counter())
        if len(self.refresh_times) > 1000:
            del self.refresh_times[:500]

    def _token_rows_expected(self) -> int:
        """Rows the token map will hold when the current prompt's generation ends (0: unknown
        or not streaming)."""
        req = self._current_req
        if req is None or not self.running or self.diffusion:
            return 0
        i = min(self.prompt_spin.value(), len(req.prompts) - 1)
        n = self.store.prompt_len.get(i)
        return 0 if n is None else n + int(req.generation.max_new_tokens)

    def keyspace_matrix(self) -> tuple[np.ndarray, list[str], list[str]] | None:
        req = self._current_req
        if req is None or self.model_info is None:
            return None
        site = self.site(self.layer_spin.value())
        xs = []
        for i in range(len(req.prompts)):
            try:
                rows = self.store.rows(site, i)
            except KeyError:
                return None
            if self.diffusion:
                if not len(rows):
                    return None
                xs.append(rows.reshape(len(rows), -1).mean(0))   # mean over denoising steps
                continue
            n = self.store.prompt_len.get(i, len(rows))
            if len(rows) < n or n == 0:
                return None
            xs.append(rows[n - 1])
        return np.stack(xs), list(req.set_names), list(req.prompts)

    def update_scatter(self) -> None:
        km = self.keyspace_matrix()
        if km is None:
            return
        x, sets, texts = km
        self._scatter_rid += 1
        self._scatter_data = (sets, texts)
        self.scatter.set_status("key space: computing PCA…")
        self.projector.submit(self._scatter_rid, "pca", x)
        if len(texts) >= 5:
            self.projector.submit(self._scatter_rid, "umap", x)
            self._umap_pending = True

    _scatter_data: tuple = ([], [])
    _umap_pending = False

    def _on_projection(self, rid: int, method: str, pts) -> None:
        if rid != self._scatter_rid:
            return
        if isinstance(pts, Exception):
            self.status.setText(f"{method.upper()} failed: {pts}")
            return
        if method == "pca" and self.scatter.method == "umap" and not self._umap_pending:
            return
        sets, texts = self._scatter_data
        if method == "umap":
            self._umap_pending = False
        self.scatter.set_points(pts, sets, texts, method)
        if method == "pca" and self._umap_pending:
            self.scatter.set_status(f"key space (PCA, {len(texts)} prompts) · UMAP computing…")

    # -- selection / inspector -------------------------------------------------------------------------
    def _on_layer_cell(self, row: int, col: int, additive: bool) -> None:
        self.select_neurons([(self.site(row), col)], additive)

    def _on_layer_cells(self, cells: list) -> None:
        self.select_neurons([(self.site(r), c) for r, c in cells], additive=True)

    def _on_token_cell(self, row: int, col: int, additive: bool) -> None:
        self.select_neurons([(self.site(self.layer_spin.value()), col)], additive)

    def _on_token_cells(self, cells: list) -> None:
        site = self.site(self.layer_spin.value())
        self.select_neurons(sorted({(site, c) for _, c in cells}), additive=True)

    def select_neurons(self, neurons: list[tuple[str, int]], additive: bool = False) -> None:
        if additive:
            self.selection += [n for n in neurons if n not in self.selection]
        else:
            self.selection = list(neurons)
        labels = [neuron_label(s, i) for s, i in self.selection[:12]]
        more = len(self.selection) - len(labels)
        self.selection_label.setText(", ".join(labels) + (f" … (+{more})" if more > 0 else "")
                                     if self.selection else "none")
        self._mark_selection()
        if self.selection:
            self.inspect(*self.selection[-1])

    def _mark_selection(self) -> None:
        # a method's neurons on the gate or up projection are marked on the post-activation
        # map as well (the same FFN neuron)
        cells = []
        for s, i in self.selection:
            row = self.site_row(s) if self.model_info else None
            if row is not None and (row, i) not in cells:
                cells.append((row, i))
        self.layer_map.mark(cells)

    def inspect(self, site: str, idx: int) -> None:
        req = self._current_req
        by_set: dict[str, list[np.ndarray]] = {}
        top: list[tuple[float, str]] = []
        if req is not None:
            for i, s in enumerate(req.set_names):
                try:
                    rows = self.store.rows(site, i)
                except KeyError:
                    continue
                if not len(rows) or idx >= rows.shape[1]:
                    continue
                if not len(rows):
                    continue
                rows = rows.reshape(len(rows), -1)
                col = rows[:, idx]
                by_set.setdefault(s, []).append(col)
                toks = ([f"step {k}" for k in range(len(rows))] if self.diffusion
                        else self.store.tokens.get(i, []))
                k = int(np.argmax(col))
                tok = toks[k] if k < len(toks) else "?"
                top.append((float(col[k]), f"{tok!r} in “{req.prompts[i][:50]}”"))
        top.sort(key=lambda t: -t[0])
        values = {s: np.concatenate(v) for s, v in by_set.items()}
        self.inspector.show_neuron(neuron_label(site, idx, with_kind=True), values, top[:12])
        if self.diffusion:
            self.inspector.show_lens({"error": "logit lens: language models only (a UNet "
                                               "neuron writes to image features, not tokens)"})
            return
        layer = int(site.split(".")[1])
        if site.endswith("mlp.hook_post"):
            self.requestLens.emit(layer, idx)
        else:
            self.inspector.show_lens({"error": "logit lens: pick a hook_post neuron"})

    def _on_lens(self, layer: int, idx: int, lens: dict) -> None:
        self.inspector.show_lens(lens)

    def save_selection_as_set(self, name: str = "") -> str | None:
        if not self.selection:
            return None
        name = name.strip() or f"neurons {len(self.neuron_sets) + 1}"
        self.neuron_sets[name] = list(self.selection)
        self._fill_sets_list()
        self.new_set_name.clear()
        self.mark_dirty()
        return name

    def _fill_sets_list(self) -> None:
        self.sets_list.clear()
        for n, v in self.neuron_sets.items():
            item = QListWidgetItem(f"{n} ({len(v)} neurons)")
            item.setData(Qt.ItemDataRole.UserRole, n)
            self.sets_list.addItem(item)

    def _select_saved_set(self, item: QListWidgetItem) -> None:
        self.select_neurons(self.neuron_sets[item.data(Qt.ItemDataRole.UserRole)])

    # -- edits, compare, export --------------------------------------------------------------------
    def _edits_changed(self) -> None:
        self.mark_dirty()
        n = len(self.edit_model.ops)
        self.right_tabs.setTabText(1, f"Edits ({n})" if n else "Edits")

    def compare(self) -> None:
        """Re-run the prompt(s) with and without the enabled edits (same seed, same settings)."""
        if self.running:
            return
        if self.model_info is None:
            self.show_error("No model loaded: use File ▸ Open model.")
            return
        req = self.build_request()
        if req is None:
            self.show_error("Type a prompt (or load a prompt set) first.")
            return
        if req.edits is None:
            self.show_error("No enabled edits: select neurons and add an edit first.")
            return
        self._current_req = req
        self._levels.clear()
        self.compare_result = None
        self.last_outputs = None
        self.prompt_spin.setRange(0, len(req.prompts) - 1)
        self.running = True
        self._set_busy(True, f"comparing {len(req.prompts)} prompt(s) with / without edits…")
        self.requestCompare.emit(req)

    def _on_compare(self, rid: int, result: dict) -> None:
        if rid != self.run_id:
            return
        self.running = False
        self.compare_result = result
        if result.get("diffusion"):
            self.progress_bar.setValue(self.progress_bar.maximum())
            d = result["diff"]
            d = d / max(float(d.max()), 1e-8)
            mad = ", ".join(f"{v:.3f}" for v in result["mean_abs_diff"][:8])
            self.image_grid.show_rows(
                [result["before"], result["after"], d],
                f"Rows: baseline | edited ({result['n_edits']} edit(s)) | difference "
                f"(scaled to its max). Same seeds (from {result['seed']}). "
                f"Mean |edited − baseline| per image: {mad}")
            self.center_tabs.setCurrentIndex(0)
            n = sum(v > 1e-3 for v in result["mean_abs_diff"])
            self._set_busy(False, f"compared in {result['seconds']:.2f}s: {n} of "
                                  f"{len(result['mean_abs_diff'])} images changed")
            self.refresh(force=True)
            self.update_scatter()
            return
        self.last_outputs = {"outputs": [it["edit_text"] for it in result["items"]]}
        self.progress_bar.setValue(self.progress_bar.maximum())
        self.compare_view.show_result(result)
        self.center_tabs.setCurrentWidget(self.compare_view)
        n = sum(it["changed"] for it in result["items"])
        self._set_busy(False, f"compared in {result['seconds']:.2f}s: {n} of "
                              f"{len(result['items'])} outputs changed")
        self.refresh(force=True)
        self.update_scatter()

    def _export_model_dialog(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export edited model to folder")
        if not d:
            return
        force = False
        p = Path(d)
        if p.is_dir() and any(p.iterdir()):
            ans = QMessageBox.question(self, "Replace folder?",
                                       f"{d} is not empty. Replace its contents?")
            if ans != QMessageBox.StandardButton.Yes:
                return
            force = True
        self.export_model(d, force)

    def export_model(self, folder: str, force: bool = False) -> None:
        if self.model_info is None:
            self.show_error("No model loaded.")
            return
        self.export_result = None
        prompt = self.prompt_edit.toPlainText() or (self.prompts[0][1] if self.prompts else "")
        self._set_busy(True, f"exporting to {folder}…")
        self.requestExport.emit(self.edit_model.enabled_set() or EditSet(), folder, force,
                                prompt)

    def _on_export(self, r: dict) -> None:
        self.export_result = r
        self._set_busy(False, f"exported to {r['path']}")
        lines = [f"Exported to {r['path']}", ""]
        if r["baked"]:
            lines.append(f"Baked into the weights ({len(r['baked'])}): plain transformers "
                         "applies them.")
            lines += [f"  • {b}" for b in r["baked"][:12]]
        if r["sidecar"]:
            lines.append(f"NOT baked ({len(r['sidecar'])}): kept in neurolens_edits.json; only "
                         "neurolens.load() applies them.")
            lines += [f"  • {b}" for b in r["sidecar"][:12]]
        if not r["baked"] and not r["sidecar"]:
            lines.append("No enabled edits: the checkpoint equals the loaded model.")
        c = r.get("check") or {}
        if c and "max_abs_pixel_diff" in c:
            lines += ["", f"Reload check on “{c['prompt'][:60]}”: "
                          f"{'passed' if c['same_output'] else 'FAILED'} (max pixel difference "
                          f"{c['max_abs_pixel_diff']:.2e} between the exported pipeline and the "
                          "in-app edited one)"]
        elif c:
            ok = c["same_output"] and c["max_abs_logit_diff"] < 1e-4
            lines += ["", f"Reload check on “{c['prompt'][:60]}”: "
                          f"{'passed' if ok else 'FAILED'} (max logit difference "
                          f"{c['max_abs_logit_diff']:.2e}, same greedy output: "
                          f"{'yes' if c['same_output'] else 'no'})"]
        self.export_message = "\n".join(lines)
        box = QMessageBox(QMessageBox.Icon.Information, "Export finished", self.export_message,
                          QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self._info_box = box

    export_message = ""
    _info_box = None

    def _on_export_failed(self, msg: str) -> None:
        self._set_busy(False, "export failed")
        self.show_error(f"Export failed.\n\n{msg}")

    def import_edits(self, path: str) -> bool:
        try:
            es = EditSet.load(path)
        except Exception as e:  # noqa: BLE001
            self.show_error(f"Could not import edits.\n\n{e}")
            return False
        self.edits_panel.add_ops(list(es), "import edits")
        return True

    def export_edits(self, path: str) -> None:
        es = self.edit_model.edit_set()
        if self.model_info:
            from neurolens.spec.edits import ModelRef
            es.model = ModelRef(self.model_info["name"], self.model_info["fingerprint"])
        es.save(path)
        self.status.setText(f"saved {len(es)} edit(s) to {path}")

    def _import_edits_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Import edits", "", "Edits (*.json)")
        if f:
            self.import_edits(f)

    def _export_edits_dialog(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Export edits", "edits.json", "Edits (*.json)")
        if f:
            self.export_edits(f)

    # -- methods -------------------------------------------------------------------------------------
    def fit_method(self, method: str, params: dict) -> None:
        if self.model_info is None:
            self.show_error("No model loaded.")
            return
        if self.running:
            return
        params = dict(params)
        sets = self._method_sets(method, params)
        if self._current_req is not None:
            params["current"] = list(self._current_req.prompts)
        params["steps"] = self.steps_spin.value()
        self.method_result = None
        self.methods_panel.fit_btn.setEnabled(False)
        self._set_busy(True, f"fitting {method}…")
        self.progress_bar.setRange(0, 0)
        self.requestFit.emit(method, params, sets)

    def _method_sets(self, method: str, params: dict) -> dict[str, list[str]]:
        """The texts of each role the method's form names (forget, retain, harmful, benign...):
        the named set's prompts, or every set but the partner role's for ALL_OTHERS (whose
        names then stand in ``params``); prompt + answer (``skill_texts``) for the roles the
        method probes that way when the form asks. Also "all": every loaded prompt. Sets
        ``params["with_answers"]`` to whether some text of an answered role carried an
        answer."""
        from neurolens.gui.views.methods_panel import ALL_OTHERS_KEY, COMPLEMENTS
        from neurolens.methods import registry
        from neurolens.methods.common import skill_texts
        rows: dict[str, list[dict]] = {}
        for s, p in self.prompts:
            rows.setdefault(s, []).append({"prompt": p, "answer": self.prompt_answers.get(p)})
        spec = registry.get(method)
        answered = spec.answered_roles if params.get("with_answers") else ()
        sets: dict[str, list[str]] = {}
        had_answer = False
        for role in (r.name for r in spec.roles):
            name = params.get(role)
            if not isinstance(name, str):
                continue
            names = [name]
            if name == ALL_OTHERS_KEY and role in COMPLEMENTS:
                names = [n for n in rows if n != params.get(COMPLEMENTS[role])]
                params[role] = " + ".join(names)
            picked = [r for n in names for r in rows.get(n, [])]
            if role in answered:
                sets[role] = skill_texts(picked)
                had_answer = had_answer or any(r["answer"] for r in picked)
            else:
                sets[role] = [r["prompt"] for r in picked]
        sets["all"] = [p for _, p in self.prompts]
        # the report says "answers probed" only where some text had one to probe
        params["with_answers"] = had_answer
        return sets

    method_result = None

    def _on_method_fitted(self, r: dict) -> None:
        self.method_result = r
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(100)
        self.methods_panel.fit_btn.setEnabled(True)
        self.edits_panel.add_ops(r["ops"], f"add {r['method']}")
        self.methods_panel.report.setText(r["text"] + f"\n→ {len(r['ops'])} edit(s) added to "
                                          "the edit list")
        if r["neurons"]:
            self.select_neurons(r["neurons"])
        if r.get("inside") is not None and len(self.scatter.points) == len(r["inside"]):
            sets, texts = self._scatter_data
            self.scatter.set_points(self.scatter.points, sets, texts, self.scatter.method,
                                    inside=np.array(r["inside"], bool))
        self._set_busy(False, r["text"])

    def _on_method_failed(self, msg: str) -> None:
        self.progress_bar.setRange(0, 100)
        self.methods_panel.fit_btn.setEnabled(True)
        self._set_busy(False, "method failed")
        self.show_error(f"The method failed.\n\n{msg}")

    # -- sessions ------------------------------------------------------------------------------------
    def session(self) -> Session:
        return Session(model=(self.model_info or {}).get("name", self._loading_name or ""),
                       prompts=list(self.prompts), typed_prompt=self.prompt_edit.toPlainText(),
                       neuron_sets={k: list(v) for k, v in self.neuron_sets.items()},
                       edits=self.edit_model.edit_set(),
                       view={"kind": self.kind_combo.currentText(),
                             "stat": self.stat_combo.currentIndex(),
                             "set_a": self.set_a.currentText(), "set_b": self.set_b.currentText(),
                             "layer": self.layer_spin.value(),
                             "show": self.show_combo.currentIndex(),
                             "answers": self.prompt_answers},
                       generation={**self.generation_params().to_json(),
                                   "denoise": self.denoise_params().to_json(),
                                   "run_list": self.run_list.isChecked()})

    def apply_session(self, ses: Session, load_model: bool = True) -> None:
        self.prompts = list(ses.prompts)
        self.prompt_answers = dict(ses.view.get("answers", {}))
        self._fill_prompt_table()
        self.prompt_edit.setPlainText(ses.typed_prompt)
        self.neuron_sets = {k: list(v) for k, v in ses.neuron_sets.items()}
        self._fill_sets_list()
        self.edit_model.replace_all(list(ses.edits), "open session")
        self.edits_panel.refresh()
        g = GenerationParams.from_json({"max_new_tokens": self.max_tokens.value(),
                                        "ignore_eos": not self.stop_eos.isChecked(),
                                        **ses.generation})
        self.set_generation_params(g)
        self.set_run_list(bool(ses.generation.get("run_list", False)))
        d = ses.generation.get("denoise")
        if isinstance(d, dict):   # sessions since the run settings became data
            self.steps_spin.setValue(int(d.get("steps", self.steps_spin.value())))
            self.guidance_spin.setValue(float(d.get("guidance", self.guidance_spin.value())))
        v = ses.view
        if v.get("kind"):
            self.kind_combo.setCurrentText(v["kind"])
        self.stat_combo.setCurrentIndex(int(v.get("stat", 0)))
        self.show_combo.setCurrentIndex(int(v.get("show", 0)))
        if v.get("set_a"):
            self.set_a.setCurrentText(v["set_a"])
        if v.get("set_b"):
            self.set_b.setCurrentText(v["set_b"])
        self._session_layer = int(v.get("layer", -1))
        if load_model and ses.model and ses.model != (self.model_info or {}).get("name"):
            self.open_model(ses.model)
        elif self._session_layer >= 0:
            self.layer_spin.setValue(self._session_layer)
        self._edits_changed()

    _session_layer = -1

    def save_session(self, path: str) -> Path:
        out = self.session().save(path)
        self.status.setText(f"session saved to {out}")
        return out

    def open_session(self, path: str, load_model: bool = True) -> bool:
        try:
            ses = Session.load(path)
        except Exception as e:  # noqa: BLE001
            self.show_error(f"Could not open the session.\n\n{e}")
            return False
        self.apply_session(ses, load_model)
        self.status.setText(f"opened session {path}")
        return True

    def _save_session_dialog(self) -> None:
        f, _ = QFileDialog.getSaveFileName(self, "Save session", "session.neurolens.json",
                                           "neurolens sessions (*.neurolens.json)")
        if f:
            self.save_session(f)

    def _open_session_dialog(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Open session", "",
                                           "neurolens sessions (*.neurolens.json)")
        if f:
            self.open_session(f)

    def mark_dirty(self) -> None:
        """Something the user did changed: autosave a few seconds later."""
        self._dirty = True
        # not restarted by later changes: a steady stream of edits still saves every few seconds
        if hasattr(self, "autosave_timer") and not self.autosave_timer.isActive():
            self.autosave_timer.start()

    def autosave(self) -> None:
        if not self._dirty:
            return
        try:
            self.autosave_path.parent.mkdir(parents=True, exist_ok=True)
            self.session().save(self.autosave_path)
            self._dirty = False
        except OSError as e:
            self.status.setText(f"autosave failed: {e}")

    def has_autosave(self) -> bool:
        return self.autosave_path.is_file()

    def restore_autosave(self, load_model: bool = True) -> bool:
        return self.open_session(str(self.autosave_path), load_model)

    def offer_restore(self) -> None:
        """At start: offer to restore the session a crash or kill left behind."""
        if not self.has_autosave():
            return
        ans = QMessageBox.question(self, "Restore session?",
                                   "neurolens did not close cleanly last time. Restore the "
                                   "last session (prompts, neuron sets, edits)?")
        if ans == QMessageBox.StandardButton.Yes:
            self.restore_autosave()
        else:
            self.autosave_path.unlink(missing_ok=True)

    # -- errors / about ----------------------------------------------------------------------------------
    def show_error(self, msg: str) -> None:
        """Non-blocking error dialog; the app stays usable."""
        self.errors.append(msg)
        if self._error_box is not None:
            self._error_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, "neurolens", msg,
                          QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self._error_box = box

    def about_text(self) -> str:
        import diffusers
        import torch
        import transformers
        dev = self.model_info["device"] if self.model_info else "no model loaded"
        return (f"neurolens {__version__}\n\ntorch {torch.__version__}\n"
                f"transformers {transformers.__version__}\ndiffusers {diffusers.__version__}\n"
                f"device: {dev}")

    def show_about(self) -> None:
        QMessageBox.about(self, "About neurolens", self.about_text())

    def closeEvent(self, ev) -> None:
        # a clean exit leaves no autosave behind (its presence at start means a crash or kill)
        self.autosave_timer.stop()
        self.autosave_path.unlink(missing_ok=True)
        self.worker.cancel_token.cancel()
        self.timer.stop()
        self.thread.quit()
        self.thread.wait(5000)
        self.projector.pool.waitForDone(2000)
        # automatic collection comes back once no thread of this window can run it any more
        thread, pool = self.thread, self.projector.pool
        gc_policy.release(self, lambda: thread.isFinished() and pool.activeThreadCount() == 0)
        super().closeEvent(ev)

    def __repr__(self) -> str:  # pragma: no cover
        return f"<MainWindow model={json.dumps((self.model_info or {}).get('name'))}>"
