"""Store: running statistics, thread safety, streamed safetensors files."""

import os
import threading

import numpy as np
import pytest
from safetensors import safe_open

from neurolens.store import CaptureStore, RunningStats, SafetensorsStreamWriter


def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 7)).astype(np.float32)
    st = RunningStats(7)
    for chunk in np.array_split(data, [1, 10, 300, 301, 999]):
        st.update(chunk)
    assert st.count == 1000
    np.testing.assert_allclose(st.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st.std(), data.std(0), rtol=1e-5)
    np.testing.assert_allclose(st.std(ddof=1), data.std(0, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(st.min, data.min(0))
    np.testing.assert_array_equal(st.max, data.max(0))
    a, b = RunningStats(7), RunningStats(7)
    a.update(data[:400])
    b.update(data[400:])
    a.merge(b)
    np.testing.assert_allclose(a.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(a.var(), data.var(0), rtol=1e-5)


def test_store_per_set_stats_and_threads():
    store = CaptureStore(ring=50)
    for i in range(8):
        store.set_prompt(i, f"p{i}", "forget" if i % 2 else "retain")
    rng = np.random.default_rng(1)
    rows = {i: rng.normal(i, 1, size=(20, 5)).astype(np.float32) for i in range(8)}

    def writer(i):
        for k in range(0, 20, 4):
            store.append("s", i, rows[i][k:k + 4])
    ts = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(store.rows("s", i), rows[i])
    f = store.stats("s", "forget")
    want = np.concatenate([rows[i] for i in range(1, 8, 2)])
    assert f.count == 80
    np.testing.assert_allclose(f.mean, want.mean(0), rtol=1e-6)
    assert store.stats("s").count == 160
    np.testing.assert_allclose(store.stats("s", "forget").std(), want.std(0), rtol=1e-5)
    # the means of several sites at once, per set or over everything (None: nothing there)
    ma, mall, none = store.means(["s", "s", "t"], "forget")[0], store.means(["s"])[0], \
        store.means(["t"])[0]
    np.testing.assert_allclose(ma, want.mean(0), rtol=1e-6)
    everything = np.concatenate(list(rows.values()))
    np.testing.assert_allclose(mall, everything.mean(0), rtol=1e-6)
    assert none is None
    assert store.latest("s").shape == (50, 5)
    assert store.take_dirty() == {"s"} and store.take_dirty() == set()
    assert store.set_names() == ["forget", "retain"]


def test_stream_writer_writes_valid_safetensors(tmp_path):
    p = tmp_path / "x.safetensors"
    arrays = {f"a/{i}": np.random.default_rng(i).normal(size=(i + 1, 3)).astype(np.float32)
              for i in range(5)}
    arrays["ints"] = np.arange(10, dtype=np.int64)
    with SafetensorsStreamWriter(p) as w:
        for k, v in arrays.items():
            w.add(k, v)
        w.close({"note": "hello"})
    with safe_open(str(p), framework="numpy") as f:
        assert f.metadata() == {"note": "hello"}
        for k, v in arrays.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
    assert not list(tmp_path.glob("*.tmp"))


def test_stream_writer_abort_leaves_nothing(tmp_path):
    p = tmp_path / "y.safetensors"
    with pytest.raises(RuntimeError):
        with SafetensorsStreamWriter(p) as w:
            w.add("a", np.zeros(3, np.float32))
            raise RuntimeError("fail")
    assert list(tmp_path.iterdir()) == []


def test_streamed_store_to_file(tmp_path):
    p = tmp_path / "cap.safetensors"
    store = CaptureStore(out=p, stats=False)
    store.append("s", 0, np.ones((3, 2), np.float32))
    store.append("s", 1, np.zeros((4, 2), np.float32))
    with pytest.raises(RuntimeError, match="read from its file"):
        store.rows("s", 0)
    store.close()
    with safe_open(str(p), framework="numpy") as f:
        assert f.get_tensor("s/0").shape == (3, 2)
        assert f.get_tensor("s/1").shape == (4, 2)


def test_bf16_exact_rows_kept_in_16_bits_and_read_back_exactly():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    # a bf16 model's activations, as the capture hooks hand them over: float32 numpy
    bf = [torch.randn(n, 64, generator=g).to(torch.bfloat16).float().numpy() for n in (3, 1, 5)]
    full = np.random.default_rng(2).normal(size=(4, 64)).astype(np.float32)   # not bf16-exact
    store = CaptureStore(ring=6, compact=0)           # 16 bits from the first byte
    for k, a in enumerate(bf):
        store.append("s", 0, a, step=k % 2)
    assert store.row_bytes() == sum(a.size for a in bf) * 2          # 16 bits a value
    np.testing.assert_array_equal(store.rows("s", 0), np.concatenate(bf))
    np.testing.assert_array_equal(store.rows("s", 0, step=0), np.concatenate([bf[0], bf[2]]))
    assert store.rows("s", 0).dtype == np.float32
    # float32 values bf16 cannot hold stay float32 and exact, also mixed with packed chunks
    store.append("s", 0, full)
    store.append("s", 1, full)
    assert store.row_bytes() == sum(a.size for a in bf) * 2 + 2 * full.nbytes
    np.testing.assert_array_equal(store.rows("s", 0), np.concatenate(bf + [full]))
    np.testing.assert_array_equal(store.rows("s", 1), full)
    # the ring and the statistics see the same values
    np.testing.assert_array_equal(store.latest("s"), np.concatenate(bf + [full, full])[-6:])
    everything = np.concatenate(bf + [full, full]).astype(np.float64)
    np.testing.assert_allclose(store.stats("s").mean, everything.mean(0), rtol=1e-6)
    # special values: zeros, inf, -0.0 are bf16-exact; a NaN payload in the low bits is not
    special = np.array([[0.0, -0.0, np.inf, -np.inf, 1.5, -2.0]], np.float32)
    nan = np.array([[np.nan, 1.0]], np.float32)
    nan.view(np.uint32)[0, 0] |= 1                      # a payload bf16 would drop
    raw = CaptureStore(stats=False, compact=0)
    raw.append("z", 0, special)
    raw.append("n", 0, nan)
    assert raw.row_bytes() == special.size * 2 + nan.nbytes
    np.testing.assert_array_equal(raw.rows("z", 0).view(np.uint32), special.view(np.uint32))
    np.testing.assert_array_equal(raw.rows("n", 0).view(np.uint32), nan.view(np.uint32))
    # compact=None keeps what came; by default only once the rows pass 64 MB
    for kw, packed in (({"compact": None}, False), ({}, False),
                       ({"compact": 2 * bf[0].nbytes}, True)):
        other = CaptureStore(**kw)
        other.append("s", 0, bf[0])
        other.append("s", 0, bf[0])
        other.append("s", 0, bf[0])     # past 2 chunks' bytes: this one in 16 bits
        assert other.row_bytes() == 2 * bf[0].nbytes + bf[0].nbytes // (2 if packed else 1)
        np.testing.assert_array_equal(other.rows("s", 0), np.concatenate([bf[0]] * 3))
    plain = CaptureStore()
    plain.append("s", 0, bf[0])
    assert plain.rows("s", 0) is bf[0]          # small captures: the array itself, no copy


def test_spilled_rows_read_back_in_order_and_memory_stays_bounded(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(3)
    limit = 4_000
    store = CaptureStore(spill=limit, ring=2, spill_dir=str(tmp_path / "rows"), compact=0)
    want: dict = {}
    steps: dict = {}
    for t in range(12):                      # tokens arrive one row per prompt and site
        for i in range(5):
            for site in ("a", "b"):
                if i == 3:                   # one prompt's rows are not bf16-exact
                    r = rng.normal(size=(1, 32)).astype(np.float32)
                else:
                    r = torch.randn(1 + t % 2, 32, generator=g).to(torch.bfloat16).float().numpy()
                step = t % 3 if site == "b" else None
                store.append(site, i, r, step=step)
                want.setdefault((site, i), []).append(r)
                steps.setdefault((site, i), []).append(step)
                assert store.row_bytes() <= limit
    assert store.spilled_bytes() > 0 and store.row_bytes() > 0
    # the file is made in the folder asked for, with no name there (nothing left behind)
    assert (tmp_path / "rows").is_dir() and os.listdir(tmp_path / "rows") == []
    for (site, i), parts in want.items():
        np.testing.assert_array_equal(store.rows(site, i), np.concatenate(parts))
        if site == "b":
            assert store.steps(site, i) == [0, 1, 2]
            for k in (0, 1, 2):
                sel = [p for p, s in zip(parts, steps[(site, i)]) if s == k]
                np.testing.assert_array_equal(store.rows(site, i, step=k), np.concatenate(sel))
    # all rows, in memory and spilled, count once: 16 bits for the bf16-exact prompts
    total = sum(np.concatenate(p).size * (4 if i == 3 else 2) for (_, i), p in want.items())
    assert store.row_bytes() + store.spilled_bytes() == total
    store.clear()
    assert store.row_bytes() == 0 and store.spilled_bytes() == 0
    store.append("a", 0, want[("a", 0)][0])
    np.testing.assert_array_equal(store.rows("a", 0), want[("a", 0)][0])
