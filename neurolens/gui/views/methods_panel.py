"""Methods panel: a form per registered method that applies to the loaded model, built from the
method registry (its roles' prompt-set pickers and its params dataclass' fields); fitting runs
in the worker."""

from __future__ import annotations

import math

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QStackedWidget, QVBoxLayout,
                               QWidget)

from neurolens.gui.presenters.methods import (ALL_OTHERS, ALL_OTHERS_KEY, Field,  # noqa: F401
                                              answers_label, form_fields, methods_for,
                                              role_choices, role_defaults, text_value)


def field_input(f: Field) -> QWidget:
    """An input for one params field, holding its default."""
    if f.kind == "bool":
        w = QCheckBox()
        w.setChecked(bool(f.default))
    elif f.kind == "int":
        w = QSpinBox()
        w.setRange(-2**31, 2**31 - 1)
        w.setValue(int(f.default))
    elif f.kind == "float":
        w = QDoubleSpinBox()
        mag = abs(float(f.default))
        step = 10.0 ** (math.floor(math.log10(mag)) - 1) if mag else 0.1   # a tenth of it
        w.setDecimals(max(2, -math.floor(math.log10(step))))
        w.setRange(-1e9, 1e9)
        w.setSingleStep(step)
        w.setValue(float(f.default))
    elif f.kind == "choice":
        w = QComboBox()
        for c in f.choices:
            w.addItem(str(c), c)
        w.setCurrentIndex(max(0, w.findData(f.default)))
    else:
        w = QLineEdit("" if f.default is None else str(f.default))
        w.setPlaceholderText(f.help or "default")
    w.setToolTip(f.help)
    return w


def field_value(f: Field, w: QWidget):
    """The value an input holds (None: leave the method's default)."""
    if f.kind == "bool":
        return w.isChecked()
    if f.kind in ("int", "float"):
        return w.value()
    if f.kind == "choice":
        return w.currentData()
    return text_value(w.text())


class MethodForm(QWidget):
    """One method's inputs: a prompt-set picker per role, an input per params field, and where
    the method probes answers a box for probing prompt + answer."""

    def __init__(self, spec, parent=None):
        super().__init__(parent)
        self.spec = spec
        f = QFormLayout(self)
        f.setContentsMargins(0, 0, 0, 0)
        self.roles: dict[str, QComboBox] = {}
        for role in spec.roles:
            combo = QComboBox()
            combo.setMinimumWidth(90)
            combo.setToolTip(role.help)
            # a set the user picked stays picked while more sets load
            combo.activated.connect(lambda _i, c=combo: c.setProperty("picked", True))
            f.addRow(f"{role.name} set", combo)
            self.roles[role.name] = combo
        self.fields = {x.name: x for x in form_fields(spec)}
        self.inputs: dict[str, QWidget] = {}
        for name, x in self.fields.items():
            self.inputs[name] = field_input(x)
            f.addRow(x.label, self.inputs[name])
        self.answers: QCheckBox | None = None
        if spec.answered_roles:
            self.answers = QCheckBox(answers_label(spec))
            self.answers.setChecked(True)
            self.answers.setToolTip("prompts loaded from a set with answers are probed as "
                                    "prompt + answer: the fit sees the answer's tokens as well")
            f.addRow("", self.answers)

    def set_names(self, names: list[str]) -> None:
        """Offer the loaded prompt sets; a picker whose role has a partner also offers "all
        other sets" (see :func:`neurolens.gui.presenters.methods.role_defaults`)."""
        picked = {r: c.currentData() for r, c in self.roles.items() if c.property("picked")}
        chosen = role_defaults(self.spec, names, picked)
        for role in self.spec.roles:
            combo = self.roles[role.name]
            combo.blockSignals(True)
            combo.clear()
            for text, value in role_choices(role, names):
                combo.addItem(text, value)
            combo.setCurrentIndex(max(0, combo.findData(chosen[role.name])))
            combo.blockSignals(False)

    def params(self) -> dict:
        """The form's values: the set of each role ("" while there is none; ALL_OTHERS_KEY
        for every other set), ``with_answers``, and the fields that are set."""
        out = {r: c.currentData() or "" for r, c in self.roles.items()}
        if self.answers is not None:
            out["with_answers"] = self.answers.isChecked()
        for name, x in self.fields.items():
            v = field_value(x, self.inputs[name])
            if v is not None:
                out[name] = v
        return out


class MethodsPanel(QWidget):
    fitRequested = Signal(str, dict)     # method title, params (set names resolved by the window)
    HINT = ("Load prompt sets (e.g. forget / retain) in the prompt panel, pick a method, then "
            "fit.")

    def __init__(self, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.method = QComboBox()
        lay.addWidget(self.method)
        self.stack = QStackedWidget()
        lay.addWidget(self.stack)
        self.method.currentIndexChanged.connect(self.stack.setCurrentIndex)
        self.forms: list[MethodForm] = []
        self._names: list[str] = []
        self.fit_btn = QPushButton("Fit and add edit")
        self.fit_btn.clicked.connect(self._fit)
        lay.addWidget(self.fit_btn)
        self.report = QLabel(self.HINT)
        self.report.setWordWrap(True)
        lay.addWidget(self.report)
        lay.addStretch(1)
        self.set_kind("lm")

    def set_kind(self, kind: str) -> None:
        """Offer the registered methods that apply to a model kind (read from the registry:
        a method registered since is offered at the next model load)."""
        specs = methods_for(kind)
        self.fit_btn.setEnabled(bool(specs))
        self.method.setVisible(bool(specs))
        if not specs:
            self.report.setText(f"No registered method applies to a {kind} model yet"
                                + (": the Edits tab has the synapse and delay ops."
                                   if kind == "snn" else "."))
        elif not self.forms:
            self.report.setText(self.HINT)
        if [f.spec.id for f in self.forms] == [s.id for s in specs]:
            return                               # the same methods: keep the forms as they are
        cur = self.method.currentText()
        self.method.blockSignals(True)
        self.method.clear()
        for form in self.forms:
            self.stack.removeWidget(form)
            form.deleteLater()
        self.forms = [MethodForm(s) for s in specs]
        for form in self.forms:
            form.set_names(self._names)
            self.stack.addWidget(form)
            self.method.addItem(form.spec.title, form.spec.id)
        self.method.blockSignals(False)
        i = self.method.findText(cur)
        self.method.setCurrentIndex(max(0, i))
        self.stack.setCurrentIndex(max(0, i))

    def form(self, method: str | None = None) -> MethodForm:
        """The form of a method (id or title; the chosen one by default)."""
        if method is None:
            return self.forms[self.method.currentIndex()]
        return next(f for f in self.forms if method in (f.spec.id, f.spec.title))

    def set_names(self, names: list[str]) -> None:
        self._names = list(names)
        for form in self.forms:
            form.set_names(self._names)

    def params(self) -> tuple[str, dict]:
        form = self.form()
        return form.spec.title, form.params()

    def _fit(self) -> None:
        if self.forms:
            m, p = self.params()
            self.fitRequested.emit(m, p)
