"""Views at real width (issue 29, item 4): heatmaps drawn downsampled (strongest or mean per
bin of neurons) with full resolution kept for clicks, wheel zoom on the neuron axis, selections
held as ranges, and the logit lens exact without a float32 copy of the unembedding."""

import random

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from neurolens.gui.presenters.pick import bin_width, downsample
from neurolens.gui.presenters.selection import NeuronRanges, Selection
from test_heatmap_pick import shown_heatmap

# -- downsampling against a plain loop ------------------------------------------------------------


def reference_bins(data, start, stop, f, mode):
    """Bin by bin with Python loops: the value of largest |value| (NaN the weakest; ties:
    the first), or the mean."""
    out = []
    for row in np.asarray(data, np.float64):
        vals = []
        for a in range(start, stop, f):
            chunk = row[a:min(a + f, stop)]
            if mode == "mean":
                vals.append(sum(chunk) / len(chunk))
            else:
                best = None
                for v in chunk:
                    mag = -1.0 if np.isnan(v) else abs(v)
                    if best is None or mag > best[0]:
                        best = (mag, v)
                vals.append(best[1])
        out.append(vals)
    return np.array(out)


@pytest.mark.parametrize("mode", ["max", "mean"])
@pytest.mark.parametrize("start,stop,f", [(0, 768, 3), (0, 1000, 7), (14, 700, 14),
                                          (5, 6, 4), (0, 50, 1)])
def test_downsample_matches_a_plain_loop(mode, start, stop, f):
    rng = np.random.default_rng(f)
    data = rng.normal(size=(5, 1000)).astype(np.float32)
    data[1, 3] = -40.0                       # signed: a -40 bin shows -40 when max
    got = downsample(data, start, stop, f, mode)
    want = reference_bins(data, start, stop, f, mode)
    assert got.shape == want.shape == (5, -(-(stop - start) // f))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if mode == "max" and start == 0 and f > 3:
        assert got[1, 0] == -40.0


def test_downsample_nan_is_weakest_and_mode_checked():
    data = np.array([[np.nan, 0.5, -0.25, np.nan]], np.float32)
    assert downsample(data, 0, 4, 2, "max").tolist() == [[0.5, -0.25]]
    assert np.isnan(downsample(np.full((1, 3), np.nan, np.float32), 0, 3, 3, "max")).all()
    with pytest.raises(ValueError):
        downsample(data, 0, 4, 2, "median")
    assert bin_width(14_336, 700) == 21 and bin_width(500, 700) == 1


def test_downsample_at_8b_width_is_cheap():
    import time
    data = np.random.default_rng(0).normal(size=(32, 14_336)).astype(np.float32)
    f = bin_width(14_336, 700)
    times = []
    for mode in ("max", "mean") * 5:
        t = time.perf_counter()
        downsample(data, 0, 14_336, f, mode)
        times.append(time.perf_counter() - t)
    assert min(times) < 0.010, times


# -- ranges against Python sets -------------------------------------------------------------------

def test_neuron_ranges_against_a_python_set():
    rng = random.Random(0)
    for _ in range(40):
        ref: set[int] = set()
        r = NeuronRanges()
        for _ in range(rng.randint(1, 30)):
            a = rng.randint(0, 200)
            b = a + rng.randint(0, 25)
            if rng.random() < 0.5:
                r.add(a, b)
                ref.update(range(a, b))
            else:
                idx = [rng.randint(0, 220) for _ in range(rng.randint(0, 6))]
                r = r.union(NeuronRanges.from_indices(idx))
                ref.update(idx)
        assert list(r) == sorted(ref) == r.to_list()
        assert len(r) == len(ref) and bool(r) == bool(ref)
        assert all((i in r) == (i in ref) for i in range(-3, 250))
        spans = r.ranges()                    # sorted, disjoint, not touching
        assert all(a < b for a, b in spans)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
        if ref:
            k = rng.randrange(len(ref))
            assert r[k] == sorted(ref)[k] and r[-1] == max(ref)
    assert NeuronRanges.from_indices([5, 3, 4, 4, 9]).ranges() == [(3, 6), (9, 10)]


def test_selection_iterates_and_edits_as_its_list(qtbot):
    """The old selection was a list of (site, index) in the order they were picked, without
    repeats; the edits panel grouped it by site (sites in first-picked order, neurons sorted).
    A Selection of the same picks gives the same edits."""
    from neurolens.gui.edit_model import EditModel
    from neurolens.gui.views.edits_panel import EditsPanel
    rng = random.Random(1)
    sites = ["blocks.2.mlp.hook_post", "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_pre"]
    picks = [(rng.choice(sites), rng.randint(0, 60)) for _ in range(150)]
    old = list(dict.fromkeys(picks))          # the old list: picked order, no repeats
    sel = Selection(picks[:70])
    sel.add(picks[70:])
    seen = list(dict.fromkeys(s for s, _ in picks))
    assert list(sel) == [(s, i) for s in seen for i in sorted({i for t, i in old if t == s})]
    assert len(sel) == len(old) and sel == sorted(old, key=lambda p: (seen.index(p[0]), p[1]))
    assert all(p in sel for p in old) and ("blocks.0.mlp.hook_post", 61) not in sel
    assert sel[:3] == list(sel)[:3] and sel[-1] == list(sel)[-1] and sel.last == picks[-1]
    assert sel.by_site() == {s: sorted({i for t, i in old if t == s}) for s in seen}

    def ops(provider):
        panel = EditsPanel(EditModel())
        qtbot.addWidget(panel)
        panel.selection_provider = provider
        panel.op.setCurrentText("scale")
        assert panel.add_for_selection() == len(seen)
        return list(panel.model.ops)
    assert ops(lambda: list(sel)) == ops(lambda: list(old))
    block = Selection()
    block.add_range("blocks.3.mlp.hook_post", 0, 14_336)
    assert len(block) == 14_336 and list(block.ranges()) == [("blocks.3.mlp.hook_post", 0, 14_336)]


# -- the widget: wheel zoom, a click after zooming, the menu's choice -----------------------------

COLS, ROW, TARGET = 768, 1, 500


@pytest.fixture
def heatmap(qtbot):
    data = np.random.default_rng(3).normal(size=(3, COLS)).astype(np.float32)
    data[ROW, TARGET] = 0.0                   # the target is the weak one among strong neighbours
    data[ROW, TARGET - 1] = data[ROW, TARGET + 1] = 9.0
    return shown_heatmap(qtbot, data)


def _view_pos(h, x, y):
    return h.mapFromScene(h.vb.mapViewToScene(QPointF(x, y)))


def _wheel(h, pos, notches):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication
    ev = QWheelEvent(QPointF(pos), QPointF(h.viewport().mapToGlobal(pos)), QPoint(0, 0),
                     QPoint(0, 120 * notches), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(h.viewport(), ev)


def test_full_map_is_drawn_downsampled_from_full_data(heatmap):
    h = heatmap
    f = h.bins[1]
    assert f > 1 and h.img.image.shape[1] == -(-COLS // f)
    np.testing.assert_array_equal(h.img.image, reference_bins(h.data, 0, COLS, f, "max"))
    assert h.img.image[ROW, TARGET // f] == 9.0 or h.img.image[ROW, (TARGET + 1) // f] == 9.0
    assert f"strongest of {f}" in h.plot.getAxis("bottom").labelText
    h.reduce_actions["mean"].trigger()        # the context menu's choice
    assert h.mode == "mean"
    np.testing.assert_allclose(h.img.image, reference_bins(h.data, 0, COLS, f, "mean"),
                               rtol=1e-5, atol=1e-6)
    assert f"mean of {f}" in h.plot.getAxis("bottom").labelText
    assert h.data.shape == (3, COLS)          # the data keep their full resolution


def _mouse(h, kind, pos, buttons, modifiers=None):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication
    vp = h.viewport()
    QApplication.sendEvent(vp, QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)),
                                           Qt.MouseButton.LeftButton, buttons,
                                           modifiers or Qt.KeyboardModifier.NoModifier))


def test_wheel_zooms_the_neuron_axis_and_a_click_then_selects_that_neuron(qtbot, heatmap):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtTest import QTest
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    h = heatmap
    (x0, x1), (y0, y1) = h.vb.viewRange()
    pos = _view_pos(h, TARGET + 0.5, ROW + 0.5)
    for _ in range(12):
        _wheel(h, pos, 1)
    (z0, z1), (w0, w1) = h.vb.viewRange()
    assert z1 - z0 < (x1 - x0) / 20 and z0 <= TARGET <= z1       # zoomed around the cursor
    assert (w0, w1) == (y0, y1)                                    # the layer axis stays
    assert h.plot.getAxis("bottom").range == [z0, z1]              # the ticks follow
    assert h.pixel_span() < 1 and h.bins == (0, 1)                 # neurons wider than a pixel
    assert h.img.image.shape[1] <= int(z1 - z0) + 2                # only the visible columns
    # a click on the target's own pixel selects it, not its strong neighbours
    pos = _view_pos(h, TARGET + 0.5, ROW + 0.5)
    with qtbot.waitSignal(h.cellClicked, timeout=2000) as sig:
        QTest.mouseClick(h.viewport(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier, pos)
    assert sig.args == [ROW, TARGET, False]
    # zooming out with the wheel, and a double-click shows every neuron again
    _wheel(h, pos, -2)
    assert h.vb.viewRange()[0][1] - h.vb.viewRange()[0][0] > z1 - z0
    # a double-click as the platform sends it: press, release, double-click, release
    for kind, buttons in ((QMouseEvent.Type.MouseButtonPress, left),
                          (QMouseEvent.Type.MouseButtonRelease, none),
                          (QMouseEvent.Type.MouseButtonDblClick, left),
                          (QMouseEvent.Type.MouseButtonRelease, none)):
        _mouse(h, kind, pos, buttons)
    qtbot.waitUntil(lambda: h.vb.viewRange()[0] == [0.0, float(COLS)], timeout=2000)
    assert h.bins[1] > 1


def test_shift_drag_after_zoom_selects_the_neurons_under_it(qtbot, heatmap):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QMouseEvent
    h = heatmap
    h.vb.setRange(xRange=(480, 520), padding=0)
    qtbot.wait(20)
    a, b = _view_pos(h, 490.5, 0.5), _view_pos(h, 495.5, 1.5)
    shift, left = Qt.KeyboardModifier.ShiftModifier, Qt.MouseButton.LeftButton
    with qtbot.waitSignal(h.blockSelected, timeout=2000) as sig:
        _mouse(h, QMouseEvent.Type.MouseButtonPress, a, left, shift)
        for t in np.linspace(0.2, 1, 5):
            qtbot.wait(20)                    # the scene drops moves faster than its rate
            p = QPoint(round(a.x() + t * (b.x() - a.x())), round(a.y() + t * (b.y() - a.y())))
            _mouse(h, QMouseEvent.Type.MouseMove, p, left, shift)
        _mouse(h, QMouseEvent.Type.MouseButtonRelease, b, Qt.MouseButton.NoButton, shift)
    assert sig.args == [0, 1, 490, 495]


def test_marks_are_runs_not_cells(heatmap):
    h = heatmap
    h.mark_ranges([(0, 0, COLS), (2, 10, 12)])
    assert len(h._marks) == COLS + 2
    assert len(h.marks.data) == 2                  # the short run: cell markers
    assert h.mark_boxes.path().elementCount() == 5  # the long run: one box


# -- the logit lens against float64 on a tiny model -----------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logit_lens_equals_a_float64_reference(dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from neurolens.engine.lm import LanguageModel
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=3000, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        hf.model.norm.weight.uniform_(0.5, 1.5)
        head = hf.lm_head.weight
        # near ties the weights' own dtype cannot order: rows a hair apart, the larger one
        # at the higher index
        head[2000] = head[10] * 0 + hf.model.layers[1].mlp.down_proj.weight[:, 7] * 40
        head[2001] = head[2000]
        head[2001, 0] += 0.01 * torch.sign(hf.model.layers[1].mlp.down_proj.weight[0, 7]
                                           * hf.model.norm.weight[0])
        # and 200 rows within rounding of each other near the top of neuron (0, 3)
        top = hf.model.layers[0].mlp.down_proj.weight[:, 3] * hf.model.norm.weight * 30
        head[2100:2300] = top + 0.004 * torch.randn(200, 32)
    hf = hf.to(getattr(torch, dtype))
    lm = LanguageModel(hf, None, name_or_path="tiny")
    for layer, neuron in ((1, 7), (0, 3)):
        with torch.no_grad():
            direction = (hf.model.layers[layer].mlp.down_proj.weight[:, neuron].double()
                         * hf.model.norm.weight.double())
            ref = hf.lm_head.weight.double() @ direction
        lens = lm.logit_lens(layer, neuron, k=10)
        top, bot = torch.topk(ref, 10), torch.topk(-ref, 10)
        assert [t for t, _ in lens["promote"]] == [str([int(i)]) for i in top.indices]
        assert [t for t, _ in lens["suppress"]] == [str([int(i)]) for i in bot.indices]
        np.testing.assert_allclose([v for _, v in lens["promote"]], top.values.numpy(),
                                   rtol=1e-6)
        np.testing.assert_allclose([v for _, v in lens["suppress"]], -bot.values.numpy(),
                                   rtol=1e-6)
    assert [t for t, _ in lm.logit_lens(1, 7, k=2)["promote"]] == ["[2001]", "[2000]"]


def test_colour_levels_of_a_wide_map_from_a_sample():
    from neurolens.gui.presenters.maps import Levels
    rng = np.random.default_rng(5)
    dense = rng.standard_t(3, size=(32, 14_336)).astype(np.float32)
    full = np.percentile(np.abs(dense[dense != 0]), 99.5)
    lo, hi = Levels()("layer", dense)
    assert lo == -hi and abs(hi - full) / full < 0.1
    sparse = np.zeros((32, 14_336), np.float32)    # 40 active neurons: the sample may miss them
    sparse.flat[rng.choice(sparse.size, 40, replace=False)] = rng.uniform(1, 9, 40)
    assert Levels()("layer", sparse)[1] == pytest.approx(np.percentile(sparse[sparse > 0], 99.5))
