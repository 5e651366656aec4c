"""The Qt binding keeps Python's books: PySide6 6.12.0 dropped one reference to None on every
call that returns nothing, and on Python 3.11 the interpreter aborts once None's count reaches
zero (about 60k calls: minutes of an idle window). pyproject.toml pins the binding below it."""

import sys

import pytest

pytestmark = pytest.mark.gui


def test_qt_calls_that_return_nothing_keep_none_alive(qapp):
    from PySide6.QtWidgets import QLabel, QTableWidget, QTableWidgetItem

    label, table = QLabel(), QTableWidget(4, 4)
    before = sys.getrefcount(None)
    for i in range(2000):
        label.setText(str(i))
        table.setItem(i % 4, 0, QTableWidgetItem(str(i)))
    lost = before - sys.getrefcount(None)
    assert lost < 100, f"{lost} references to None lost over 4,000 Qt calls"
