"""Methods panel: each paper method as a short form; fitting runs in the worker."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel,
                               QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget)

from neurolens.methods.neurostrike import LAYER_FRACTIONS

METHODS = ["Neuron Adjust", "Key Space Detection", "NeuroStrike", "Statistical top-k",
           "Memorization subspace"]
#: the choice, in a set combo that has a partner, of every loaded set but the partner's: its
#: text, and its value in ``params()`` (no set name holds a NUL, so none can be taken for it)
ALL_OTHERS = "all other sets"
ALL_OTHERS_KEY = "\0all other sets"
#: (role, partner role): a role whose combo offers ALL_OTHERS, and the set it leaves out
COMPLEMENTS = {"retain": "forget", "keep": "forget", "benign": "harmful"}


def _value(combo: QComboBox) -> str:
    """The set a combo names (ALL_OTHERS_KEY for that choice); "" while there is none."""
    return combo.currentData() or ""


class MethodsPanel(QWidget):
    fitRequested = Signal(str, dict)     # method, params (set names resolved by the window)
    KS_AUTO = -65                        # the layer spin box value that means "choose it"

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.method = QComboBox()
        self.method.addItems(METHODS)
        lay.addWidget(self.method)
        self.stack = QStackedWidget()
        lay.addWidget(self.stack)
        self.method.currentIndexChanged.connect(self.stack.setCurrentIndex)

        def form():
            w = QWidget()
            f = QFormLayout(w)
            f.setContentsMargins(0, 0, 0, 0)
            self.stack.addWidget(w)
            return f

        f = form()   # Neuron Adjust
        self.na_forget, self.na_retain = QComboBox(), QComboBox()
        f.addRow("forget set", self.na_forget)
        f.addRow("retain set", self.na_retain)
        self.na_p = QDoubleSpinBox()
        self.na_p.setRange(0.1, 50)
        self.na_p.setValue(3.0)
        self.na_p.setSuffix(" %")
        f.addRow("top p", self.na_p)
        self.na_seed = QSpinBox()
        self.na_seed.setRange(0, 2**31 - 1)
        f.addRow("seed", self.na_seed)
        self.na_answers = QCheckBox("probe the answers too")
        self.na_answers.setChecked(True)
        self.na_answers.setToolTip("prompts loaded from a set with answers are probed as prompt + "
                                   "answer: the intervention acts on the answer's tokens as well")
        f.addRow("", self.na_answers)

        f = form()   # KSD
        self.ks_forget = QComboBox()
        f.addRow("forget set", self.ks_forget)
        self.ks_alpha = QDoubleSpinBox()
        self.ks_alpha.setRange(0.01, 20)
        self.ks_alpha.setSingleStep(0.1)
        self.ks_alpha.setValue(2.0)
        f.addRow("alpha", self.ks_alpha)
        self.ks_layer = QSpinBox()
        self.ks_layer.setRange(self.KS_AUTO, 64)
        self.ks_layer.setSpecialValueText("auto (best margin on the keep set)")
        self.ks_layer.setValue(-1)
        self.ks_layer.setToolTip("-1 = the last layer; the lowest value chooses the layer whose "
                                 "cube holds the forget set and keeps the keep set out")
        f.addRow("layer", self.ks_layer)
        self.ks_keep = QComboBox()
        self.ks_keep.setToolTip("prompts of the skills to keep (used by the automatic layer)")
        f.addRow("keep set", self.ks_keep)

        f = form()   # NeuroStrike
        self.ns_harmful, self.ns_benign = QComboBox(), QComboBox()
        f.addRow("harmful set", self.ns_harmful)
        f.addRow("benign set", self.ns_benign)
        self.ns_benign.setToolTip("what the model must keep doing: its answered requests and "
                                  "skills; neurons they need are not taken for safety neurons")
        self.ns_answers = QCheckBox("probe the benign answers too")
        self.ns_answers.setChecked(True)
        self.ns_answers.setToolTip("benign prompts loaded with answers are probed as prompt + "
                                   "answer, so neurons the answers need are kept; the harmful "
                                   "requests are probed alone")
        f.addRow("", self.ns_answers)
        self.ns_frac = QComboBox()
        self.ns_frac.addItems([f"{f:.0%}" for f in LAYER_FRACTIONS])
        self.ns_frac.setCurrentIndex(len(LAYER_FRACTIONS) - 1)
        f.addRow("prune in first", self.ns_frac)

        f = form()   # top-k
        self.tk_keep = QDoubleSpinBox()
        self.tk_keep.setRange(0.5, 99)
        self.tk_keep.setValue(8.0)
        self.tk_keep.setSuffix(" %")
        f.addRow("keep", self.tk_keep)
        self.tk_variant = QComboBox()
        self.tk_variant.addItems(["soft", "hard"])
        f.addRow("variant", self.tk_variant)

        f = form()   # memorization subspace (diffusion)
        self.mz_target, self.mz_base = QComboBox(), QComboBox()
        f.addRow("memorized set", self.mz_target)
        f.addRow("base set", self.mz_base)
        self.mz_rho = QDoubleSpinBox()
        self.mz_rho.setRange(0.1, 50)
        self.mz_rho.setValue(1.0)
        self.mz_rho.setSuffix(" %")
        self.mz_rho.setToolTip("top rho of each output row of the Wanda scores")
        f.addRow("rho", self.mz_rho)
        self.mz_tau = QSpinBox()
        self.mz_tau.setRange(1, 1000)
        self.mz_tau.setValue(10)
        self.mz_tau.setToolTip("union of the masks of the first tau denoising steps")
        f.addRow("tau (steps)", self.mz_tau)

        for combo in self.set_combos():
            combo.activated.connect(lambda _i, c=combo: c.setProperty("picked", True))

        self.fit_btn = QPushButton("Fit and add edit")
        self.fit_btn.clicked.connect(self._fit)
        lay.addWidget(self.fit_btn)
        self.report = QLabel("Load prompt sets (e.g. forget / retain) in the prompt panel, "
                             "pick a method, then fit.")
        self.report.setWordWrap(True)
        lay.addWidget(self.report)
        lay.addStretch(1)

    def set_diffusion(self, diffusion: bool) -> None:
        """Offer the methods that apply to the loaded model."""
        from neurolens.methods import registry
        kind = "diffusion" if diffusion else "lm"
        want = [s.title for s in registry.for_kind(kind) if s.title in METHODS]
        for i, name in enumerate(METHODS):
            self.method.model().item(i).setEnabled(name in want)
        if self.method.currentText() not in want:
            self.method.setCurrentText(want[0])

    def set_combos(self) -> list[QComboBox]:
        return [self.na_forget, self.na_retain, self.ks_forget, self.ks_keep, self.ns_harmful,
                self.ns_benign, self.mz_target, self.mz_base]

    def set_names(self, names: list[str]) -> None:
        """Offer the loaded prompt sets; a combo with a partner also offers ALL_OTHERS."""
        harmful = (next((n for n in names if "refus" in n.lower()), None)
                   or next((n for n in names if n.lower().startswith("harmful")), None))
        # the sets to keep default to all but the partner's once there are three or more
        others = ALL_OTHERS_KEY if len(names) > 2 else 1
        for combo, default in ((self.na_forget, 0), (self.na_retain, others),
                               (self.ks_forget, 0), (self.ks_keep, others),
                               (self.ns_harmful, harmful or 0), (self.ns_benign, others),
                               (self.mz_target, 0), (self.mz_base, 1)):
            # a set the user picked stays picked; the others follow the loaded sets' defaults
            cur = combo.currentData() if combo.property("picked") else None
            combo.blockSignals(True)
            combo.clear()
            for n in names:
                combo.addItem(n, n)
            if combo in (self.na_retain, self.ks_keep, self.ns_benign) and len(names) > 1:
                combo.addItem(ALL_OTHERS, ALL_OTHERS_KEY)
            if cur is not None and combo.findData(cur) >= 0:
                combo.setCurrentIndex(combo.findData(cur))
            elif isinstance(default, str) and combo.findData(default) >= 0:
                combo.setCurrentIndex(combo.findData(default))
            elif isinstance(default, int) and len(names) > default:
                combo.setCurrentIndex(default)
            combo.blockSignals(False)
        for first, second in ((self.na_forget, self.na_retain), (self.ks_forget, self.ks_keep),
                              (self.ns_harmful, self.ns_benign),
                              (self.mz_target, self.mz_base)):
            if second.currentData() == first.currentData():
                other = [n for n in names if n != first.currentData()]
                if other:
                    second.setCurrentIndex(second.findData(other[0]))

    def params(self) -> tuple[str, dict]:
        m = self.method.currentText()
        if m == "Neuron Adjust":
            return m, {"forget": _value(self.na_forget),
                       "retain": _value(self.na_retain),
                       "p": self.na_p.value() / 100, "seed": self.na_seed.value(),
                       "with_answers": self.na_answers.isChecked()}
        if m == "Key Space Detection":
            auto = self.ks_layer.value() == self.KS_AUTO
            return m, {"forget": _value(self.ks_forget), "alpha": self.ks_alpha.value(),
                       "layer": "auto" if auto else self.ks_layer.value(),
                       "keep": _value(self.ks_keep)}
        if m == "NeuroStrike":
            return m, {"harmful": _value(self.ns_harmful),
                       "benign": _value(self.ns_benign),
                       "with_answers": self.ns_answers.isChecked(),
                       "layers_fraction": LAYER_FRACTIONS[self.ns_frac.currentIndex()]}
        if m == "Memorization subspace":
            return m, {"target": _value(self.mz_target), "base": _value(self.mz_base),
                       "rho": self.mz_rho.value() / 100, "tau": self.mz_tau.value()}
        return m, {"keep_fraction": self.tk_keep.value() / 100,
                   "variant": self.tk_variant.currentText()}

    def _fit(self) -> None:
        m, p = self.params()
        self.fitRequested.emit(m, p)
