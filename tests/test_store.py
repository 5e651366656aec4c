"""Store: running statistics, thread safety, streamed safetensors files."""

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
