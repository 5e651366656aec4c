"""The main window's widgets, built onto the window (the way Qt Designer's ``setupUi`` does):
each widget becomes an attribute of the window, wired to the window's methods. No state and no
logic live here."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QPlainTextEdit, QProgressBar, QPushButton,
                               QSpinBox, QSplitter, QTabWidget, QTableWidget, QVBoxLayout,
                               QWidget)

from neurolens.gui.presenters.family import NEURON_KINDS
from neurolens.gui.views.attention_view import AttentionView
from neurolens.gui.views.attribute_panel import AttributePanel, AttributeResults
from neurolens.gui.views.compare_view import CompareView
from neurolens.gui.views.edits_panel import EditsPanel
from neurolens.gui.views.heatmap import Heatmap
from neurolens.gui.views.image_grid import ImageGrid
from neurolens.gui.views.inspector import NeuronInspector
from neurolens.gui.views.methods_panel import MethodsPanel
from neurolens.gui.views.scatter import KeySpaceScatter
from neurolens.gui.views.snn_view import DelayPanel, RasterPanel


def build_ui(w) -> None:
    """The window's widgets: the prompt panel (left), the view bar and views (centre), the
    inspector, edit and method panels (right), the status bar."""
    # left: prompts and run controls
    left = QWidget()
    ll = QVBoxLayout(left)
    ll.setContentsMargins(6, 6, 6, 6)
    w.model_label = QLabel("no model")
    w.model_label.setWordWrap(True)
    w.model_label.setStyleSheet("font-weight: bold")
    ll.addWidget(w.model_label)
    w.prompt_box = QWidget()       # the typed prompt (not for a spiking network's samples)
    pl = QVBoxLayout(w.prompt_box)
    pl.setContentsMargins(0, 0, 0, 0)
    pl.addWidget(QLabel("Prompt"))
    w.prompt_edit = QPlainTextEdit()
    w.prompt_edit.setPlaceholderText("Type a prompt, e.g. Compute: 47+38=")
    w.prompt_edit.setMaximumHeight(90)
    w.prompt_edit.textChanged.connect(w.mark_dirty)
    pl.addWidget(w.prompt_edit)
    row = QHBoxLayout()
    w.set_name = QLineEdit("typed")
    w.set_name.setToolTip("prompt set name for added prompts (views colour by set)")
    row.addWidget(QLabel("set"))
    row.addWidget(w.set_name)
    add = QPushButton("Add to list")
    add.clicked.connect(w.prompt_sets.add_typed)
    row.addWidget(add)
    pl.addLayout(row)
    ll.addWidget(w.prompt_box)
    w.picker_label = QLabel("")
    w.picker_label.setWordWrap(True)
    ll.addWidget(w.picker_label)
    row = QHBoxLayout()
    w.shipped = QComboBox()
    row.addWidget(w.shipped)
    w.shipped_n = QSpinBox()
    w.shipped_n.setRange(1, 400)
    w.shipped_n.setValue(24)
    w.shipped_n.setToolTip("how many prompts to take")
    row.addWidget(w.shipped_n)
    b = QPushButton("Load")
    b.clicked.connect(lambda: w.picker.load_chosen_set())
    row.addWidget(b)
    ll.addLayout(row)
    row = QHBoxLayout()
    b = QPushButton("Load file…")
    b.clicked.connect(lambda: w.picker.file_dialog())
    row.addWidget(b)
    b = QPushButton("Clear list")
    b.clicked.connect(lambda: w.picker.clear())
    row.addWidget(b)
    ll.addLayout(row)
    w.prompt_table = QTableWidget(0, 2)
    w.prompt_table.setHorizontalHeaderLabels(["set", "prompt"])
    w.prompt_table.horizontalHeader().setStretchLastSection(True)
    w.prompt_table.verticalHeader().setVisible(False)
    w.prompt_table.currentCellChanged.connect(lambda r, *_: w.picker.row_chosen(r))
    ll.addWidget(w.prompt_table, 1)

    gen = w.gen_box = QGroupBox("Generation")
    gf = QFormLayout(gen)
    w.max_tokens = QSpinBox()
    w.max_tokens.setRange(0, 4096)
    w.max_tokens.setValue(12)
    gf.addRow("max new tokens", w.max_tokens)
    w.sampling = QCheckBox("sample (else greedy)")
    gf.addRow(w.sampling)
    w.temperature = QDoubleSpinBox()
    w.temperature.setRange(0.05, 5.0)
    w.temperature.setValue(1.0)
    w.temperature.setSingleStep(0.1)
    gf.addRow("temperature", w.temperature)
    w.seed = QSpinBox()
    w.seed.setRange(0, 2**31 - 1)
    gf.addRow("seed", w.seed)
    w.stop_eos = QCheckBox("stop at end of text")
    w.stop_eos.setChecked(True)
    gf.addRow(w.stop_eos)
    w.stop_answer = QCheckBox("stop at the end of each set answer")
    w.stop_answer.setToolTip("prompts loaded from a set with answers stop where their "
                                "answer ends (a line, or a program body)")
    w.stop_answer.setChecked(True)
    gf.addRow(w.stop_answer)
    w.steps_spin = QSpinBox()
    w.steps_spin.setRange(1, 1000)
    w.steps_spin.setValue(20)
    gf.addRow("denoising steps", w.steps_spin)
    w.guidance_spin = QDoubleSpinBox()
    w.guidance_spin.setRange(0.0, 30.0)
    w.guidance_spin.setSingleStep(0.5)
    w.guidance_spin.setValue(3.0)
    gf.addRow("guidance scale", w.guidance_spin)
    w.run_list = QCheckBox("run the prompt list (else the typed prompt)")
    gf.addRow(w.run_list)
    w._gen_form = gf
    ll.addWidget(gen)
    row = QHBoxLayout()
    w.run_btn = QPushButton("Run")
    w.run_btn.setShortcut("Ctrl+Return")
    w.run_btn.clicked.connect(w.run)
    w.cancel_btn = QPushButton("Cancel")
    w.cancel_btn.clicked.connect(w.cancel)
    w.compare_btn = QPushButton("Compare")
    w.compare_btn.setToolTip("run with and without the enabled edits, side by side")
    w.compare_btn.clicked.connect(w.compare)
    row.addWidget(w.run_btn)
    row.addWidget(w.compare_btn)
    row.addWidget(w.cancel_btn)
    ll.addLayout(row)

    # centre: view controls + views
    centre = QWidget()
    cl = QVBoxLayout(centre)
    cl.setContentsMargins(2, 2, 2, 2)
    ctl = QHBoxLayout()
    ctl.addWidget(QLabel("site"))
    w.kind_combo = QComboBox()
    w.kind_combo.addItems(NEURON_KINDS)
    w.kind_combo.setCurrentText("mlp.hook_post")
    w.kind_combo.currentIndexChanged.connect(w._view_changed)
    ctl.addWidget(w.kind_combo)
    ctl.addWidget(QLabel("statistic"))
    w.stat_combo = QComboBox()
    w.stat_combo.addItems(["mean activation", "set difference A − B"])
    w.stat_combo.currentIndexChanged.connect(w._view_changed)
    ctl.addWidget(w.stat_combo)
    w.set_a = QComboBox()
    w.set_b = QComboBox()
    for c in (w.set_a, w.set_b):
        c.currentIndexChanged.connect(w._view_changed)
        c.setMinimumWidth(90)
    ctl.addWidget(QLabel("A"))
    ctl.addWidget(w.set_a)
    ctl.addWidget(QLabel("B"))
    ctl.addWidget(w.set_b)
    ctl.addWidget(QLabel("show"))
    w.show_combo = QComboBox()
    w.show_combo.addItems(["edited run", "baseline", "difference"])
    w.show_combo.setToolTip("after Compare: the edited run, the baseline, or edited − "
                               "baseline")
    w.show_combo.currentIndexChanged.connect(w._view_changed)
    ctl.addWidget(w.show_combo)
    ctl.addSpacing(16)
    w.layer_label = QLabel("token view: layer")
    ctl.addWidget(w.layer_label)
    w.layer_spin = QSpinBox()
    w.layer_spin.valueChanged.connect(w._view_changed)
    ctl.addWidget(w.layer_spin)
    w.step_label = QLabel("step")
    ctl.addWidget(w.step_label)
    w.step_spin = QSpinBox()
    w.step_spin.setRange(-1, 999)
    w.step_spin.setValue(-1)
    w.step_spin.setSpecialValueText("all")
    w.step_spin.setToolTip("diffusion: denoising step the layer heatmap shows (all = mean "
                              "over steps)")
    w.step_spin.valueChanged.connect(w._view_changed)
    ctl.addWidget(w.step_spin)
    ctl.addWidget(QLabel("prompt"))
    w.prompt_spin = QSpinBox()
    w.prompt_spin.valueChanged.connect(w._view_changed)
    ctl.addWidget(w.prompt_spin)
    ctl.addStretch(1)
    cl.addLayout(ctl)

    vsplit = w.view_split = QSplitter(Qt.Orientation.Vertical)
    top = QSplitter(Qt.Orientation.Horizontal)
    w.layer_map = Heatmap("layer × neuron", "neuron", "layer")
    w.layer_map.cellClicked.connect(w.neurons.layer_cell)
    w.layer_map.cellsSelected.connect(w.neurons.layer_cells)
    w.layer_map.blockSelected.connect(w.neurons.layer_block)
    top.addWidget(w.layer_map)
    w.scatter = KeySpaceScatter()
    w.scatter.lassoSelected.connect(w.define_prompt_set)
    top.addWidget(w.scatter)
    w.delays = DelayPanel()
    top.addWidget(w.delays)
    top.setSizes([820, 420, 420])
    vsplit.addWidget(top)
    bottom = w.token_box = QWidget()
    bl = QVBoxLayout(bottom)
    bl.setContentsMargins(0, 0, 0, 0)
    w.token_map = Heatmap("token × neuron", "neuron", "token")
    w.token_map.cellClicked.connect(w.neurons.token_cell)
    w.token_map.cellsSelected.connect(w.neurons.token_cells)
    w.token_map.blockSelected.connect(w.neurons.token_block)
    bl.addWidget(w.token_map, 1)
    w.output_label = QLabel("")
    w.output_label.setWordWrap(True)
    w.output_label.setTextFormat(Qt.TextFormat.RichText)
    w.output_label.setStyleSheet("font-family: monospace; padding: 4px")
    bl.addWidget(w.output_label)
    bsplit = QSplitter(Qt.Orientation.Horizontal)
    bsplit.addWidget(bottom)
    w.image_grid = ImageGrid()
    bsplit.addWidget(w.image_grid)
    w.rasters = RasterPanel()
    w.rasters.neuronClicked.connect(w.snn.raster_clicked)
    bsplit.addWidget(w.rasters)
    bsplit.setSizes([620, 520, 1140])
    vsplit.addWidget(bsplit)
    vsplit.setSizes([470, 380])
    w.center_tabs = QTabWidget()
    w.center_tabs.addTab(vsplit, "Neurons")
    w.compare_view = CompareView()
    w.center_tabs.addTab(w.compare_view, "Compare")
    w.attribute_results = AttributeResults()
    w.center_tabs.addTab(w.attribute_results, "Attribution")
    w.attention_view = AttentionView()
    w.center_tabs.addTab(w.attention_view, "Attention")

    cl.addWidget(w.center_tabs, 1)

    # right: inspector + neuron sets
    right = QTabWidget()
    w.right_tabs = right
    inspect_tab = QWidget()
    rl = QVBoxLayout(inspect_tab)
    rl.setContentsMargins(4, 4, 4, 4)
    w.inspector = NeuronInspector()
    w.dashboard = w.inspector.dashboard
    rl.addWidget(w.inspector, 3)
    rl.addWidget(QLabel("Selection"))
    w.selection_label = QLabel("none (click a cell; shift-click or shift-drag for many)")
    w.selection_label.setWordWrap(True)
    rl.addWidget(w.selection_label)
    row = QHBoxLayout()
    w.new_set_name = QLineEdit()
    w.new_set_name.setPlaceholderText("neuron set name")
    row.addWidget(w.new_set_name)
    b = QPushButton("Save as set")
    b.clicked.connect(lambda: w.save_selection_as_set(w.new_set_name.text()))
    row.addWidget(b)
    rl.addLayout(row)
    w.sets_list = QListWidget()
    w.sets_list.itemDoubleClicked.connect(w.neurons.select_saved)
    rl.addWidget(w.sets_list, 1)
    right.addTab(inspect_tab, "Inspect")
    w.edits_panel = EditsPanel(w.edit_model)
    w.edits_panel.selection_provider = lambda: w.selection.copy()
    w.edits_panel.changed.connect(w.edits_changed)
    right.addTab(w.edits_panel, "Edits")
    w.methods_panel = MethodsPanel()
    w.methods_panel.fitRequested.connect(w.fit_method)
    right.addTab(w.methods_panel, "Methods")
    w.attribute_panel = AttributePanel()
    right.addTab(w.attribute_panel, "Attribute")

    split = QSplitter(Qt.Orientation.Horizontal)
    split.addWidget(left)
    split.addWidget(centre)
    split.addWidget(right)
    split.setSizes([330, 840, 310])
    w.setCentralWidget(split)

    w.status = QLabel("starting…")
    w.progress_bar = QProgressBar()
    w.progress_bar.setMaximumWidth(260)
    w.statusBar().addWidget(w.status, 1)
    w.statusBar().addPermanentWidget(w.progress_bar)


def build_menus(w) -> None:
    """File, Run, Edit and Help menus."""
    m = w.menuBar().addMenu("&File")
    a = QAction("&Open model…", w)
    a.setShortcut("Ctrl+O")
    a.triggered.connect(w._open_model_dialog)
    m.addAction(a)
    w.recent_menu = m.addMenu("Open &recent")
    w._fill_recent()
    m.addSeparator()
    for text, fn, key in (("&Save session…", w.sessions.save_dialog, "Ctrl+S"),
                          ("Open s&ession…", w.sessions.open_dialog, None),
                          (None, None, None),
                          ("Load &prompts…", lambda: w.picker.file_dialog(), None),
                          ("&Import edits…", w.exports.import_dialog, None),
                          ("E&xport edits…", w.exports.export_edits_dialog, None),
                          ("Export edited &model…", w.exports.export_model_dialog, "Ctrl+E")):
        if text is None:
            m.addSeparator()
            continue
        a = QAction(text, w)
        a.triggered.connect(fn)
        if key:
            a.setShortcut(key)
        m.addAction(a)
    m.addSeparator()
    a = QAction("&Quit", w)
    a.setShortcut("Ctrl+Q")
    a.triggered.connect(w.close)
    m.addAction(a)
    r = w.menuBar().addMenu("&Run")
    for text, fn, key in (("&Run", w.run, "Ctrl+R"),
                          ("&Compare with / without edits", w.compare, "Ctrl+Shift+R"),
                          ("C&ancel", w.cancel, "Esc")):
        a = QAction(text, w)
        a.triggered.connect(fn)
        a.setShortcut(key)
        r.addAction(a)
    e = w.menuBar().addMenu("&Edit")
    for text, fn, key in (("&Undo edit", lambda: w.edits_panel.undo(), "Ctrl+Z"),
                          ("&Redo edit", lambda: w.edits_panel.redo(), "Ctrl+Shift+Z")):
        a = QAction(text, w)
        a.triggered.connect(fn)
        a.setShortcut(key)
        e.addAction(a)
    h = w.menuBar().addMenu("&Help")
    a = QAction("&About neurolens", w)
    a.triggered.connect(w.show_about)
    h.addAction(a)


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
