"""The machinery of ``neurolens bench --big`` at a tiny scale: the model it makes, one step by
neurolens and by plain transformers in fresh processes, the table."""

import json

import pytest
from safetensors import safe_open

from neurolens.bench.cases import big
from neurolens.cli.parser import build_parser


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big") / "tiny"
    weights = big.make_model(folder, "tiny")
    return folder, weights


def test_made_model_has_the_shape_and_dtype_asked(made):
    folder, weights = made
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in big.SHAPES["tiny"].items():
        assert cfg[k] == v, k
    assert cfg["tie_word_embeddings"] is True and cfg["rope_parameters"]["rope_type"] == "llama3"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        n = sum(f.get_slice(k).get_shape()[0] * (f.get_slice(k).get_shape() + [1])[1]
                for k in f.keys())
    assert dtypes == {"BF16"}
    assert weights == (folder / "model.safetensors").stat().st_size and weights > 2 * n


def test_steps_in_fresh_processes_and_the_table(made):
    folder, weights = made
    rows = big.measure(folder, steps=("export",), log=lambda *a: None)
    (r,) = rows
    assert r["step"] == "export"
    # a fresh process: at least the Python interpreter and torch, less than the machine
    assert 50e6 < r["hwm"] < 8e9 and 50e6 < r["plain_hwm"] < 8e9
    assert r["rss_per_weights"] == pytest.approx(r["hwm"] / weights)
    assert r["ok"] == (r["hwm"] <= weights + 0.8e9 + 0.1 * weights)
    text = big.table(rows, weights)
    assert "| export |" in text and f"{r['hwm'] / 1e9:.2f} GB" in text


def test_cli_flag():
    args = build_parser().parse_args(["bench", "--big"])
    assert args.big == "3b"
    assert build_parser().parse_args(["bench", "--big", "1b"]).big == "1b"
    assert build_parser().parse_args(["bench"]).big is None
