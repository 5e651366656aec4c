"""A click on a heatmap whose neurons are narrower than a pixel selects the strongest neuron the
pixel covers, and the hover read-out names it before the click (issue 29, item 4)."""

import numpy as np
import pytest

from neurolens.gui.presenters.pick import (cell_text, pick_column, pixel_columns,
                                           strongest_column)


def test_strongest_is_largest_magnitude_signed():
    row = np.array([0.0, 3.0, -5.0, 1.0])
    assert strongest_column(row, 0, 3) == 2          # a -5 beats a +3
    assert strongest_column(row, 0, 1) == 1
    assert strongest_column(np.array([2.0, -2.0, 2.0]), 0, 2) == 0   # ties: the first


def test_range_of_one_column_and_nan():
    row = np.array([9.0, 0.0, 1.0])
    assert strongest_column(row, 1, 1) == 1          # the zero one: it is the only one
    assert strongest_column(np.array([np.nan, 0.5]), 0, 1) == 1
    assert strongest_column(np.array([np.nan]), 0, 0) == 0


def test_range_clipped_at_the_edges():
    row = np.array([4.0, 0.0, 0.0, 0.0, -7.0])
    assert strongest_column(row, -3, 1) == 0
    assert strongest_column(row, 3, 10) == 4
    assert strongest_column(row, 5, 9) is None
    assert strongest_column(row, -4, -1) is None
    assert pixel_columns(0.2, 3.0, 5) == (0, 1)       # [-1.3, 1.7): clipped at 0
    assert pixel_columns(4.9, 3.0, 5) == (3, 4)
    assert pixel_columns(-2.0, 1.5, 5) is None
    assert pixel_columns(5.5, 0.5, 5) is None


def test_pixel_narrower_than_a_column_picks_the_column_under_the_cursor():
    row = np.array([0.0, 9.0, 0.0])
    assert pixel_columns(2.3, 0.4, 3) == (2, 2)
    assert pick_column(row, 2.3, 0.4) == 2            # as before: the neighbour, not the 9
    assert pick_column(row, 2.3, 1.0) == 2
    assert pick_column(row, 2.3, 2.0) == 1            # the pixel covers [1.3, 3.3): 1 and 2
    assert pixel_columns(2.3, 2.0, 3) == (1, 2)


def test_cell_text():
    assert cell_text("L3", 154, 4.2071) == "L3.N154 = +4.21"
    assert cell_text("L0", 2, -0.5) == "L0.N2 = -0.5"
    assert cell_text(" the", 7, 1.0, token=True) == "N7 at ' the' = +1"


# -- the widget: a 4 x 768 map in a window 400 pixels wide ----------------------------------------

STRONG, ROW = 384, 2


def shown_heatmap(qtbot, data: np.ndarray):
    """A layer map 400 x 300 pixels on screen showing ``data`` (rows L0, L1, ...) at levels
    -5..5, its layout settled."""
    from neurolens.gui.views.heatmap import Heatmap
    h = Heatmap("layer × neuron", "neuron", "layer")
    qtbot.addWidget(h)
    h.resize(400, 300)
    h.show()
    qtbot.waitExposed(h)
    h.set_data(data, (-5.0, 5.0))
    h.set_row_labels([f"L{i}" for i in range(len(data))])
    qtbot.wait(50)                                    # the layout settles
    return h


@pytest.fixture
def heatmap(qtbot):
    data = np.zeros((4, 768), np.float32)
    data[ROW, STRONG] = -4.21                         # signed: strongest by magnitude
    data[ROW, STRONG + 5] = 0.3
    return shown_heatmap(qtbot, data)


def _near_miss_pixel(h):
    """A viewport pixel, within a pixel of the strong column, whose own position lies on a zero
    neighbour (what a click there selected before)."""
    from PySide6.QtCore import QPoint, QPointF
    span = h.pixel_span()
    assert span > 1.2, span                           # 768 neurons in < 400 px: sub-pixel
    centre = h.mapFromScene(h.vb.mapViewToScene(QPointF(STRONG + 0.5, ROW + 0.5)))
    for dx in (-1, 1, -2, 2):
        pos = QPoint(centre.x() + dx, centre.y())
        x = h.vb.mapSceneToView(h.mapToScene(pos)).x()
        if int(np.floor(x)) != STRONG and abs(x - (STRONG + 0.5)) < span:
            return pos, x
    raise AssertionError("no pixel next to the strong column lands on a neighbour")


def test_click_selects_the_strongest_neuron_under_the_pixel(qtbot, heatmap):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    pos, x = _near_miss_pixel(heatmap)
    assert heatmap.data[ROW, int(np.floor(x))] == 0   # the cursor itself is on a zero neuron
    with qtbot.waitSignal(heatmap.cellClicked, timeout=2000) as sig:
        QTest.mouseClick(heatmap.viewport(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier, pos)
    assert sig.args == [ROW, STRONG, False]


def test_hover_readout_names_the_neuron_a_click_selects(qtbot, heatmap):
    from PySide6.QtTest import QTest
    assert heatmap.hover_text() == ""
    pos, _ = _near_miss_pixel(heatmap)
    QTest.mouseMove(heatmap.viewport(), pos)
    qtbot.waitUntil(lambda: heatmap.hover_text() != "", timeout=2000)
    assert heatmap.hover_text() == f"L{ROW}.N{STRONG} = -4.21"
    data = heatmap.data.copy()                        # new values under a resting cursor
    data[ROW, STRONG] = 2.5
    heatmap.set_data(data, heatmap.levels)
    assert heatmap.hover_text() == f"L{ROW}.N{STRONG} = +2.5"
    heatmap._on_move(heatmap.mapToScene(0, 0))      # outside the plot: the read-out goes
    assert heatmap.hover_text() == ""


def test_programmatic_click_selects_exactly_that_cell(qtbot, heatmap):
    with qtbot.waitSignal(heatmap.cellClicked, timeout=1000) as sig:
        heatmap.click_cell(ROW, STRONG + 1)           # a zero neighbour: still that one
    assert sig.args == [ROW, STRONG + 1, False]
    with qtbot.assertNotEmitted(heatmap.cellClicked):
        heatmap.click_cell(ROW, 768)                  # outside the map
