"""`neurolens bench --quick` keeps the benchmark code working (timings are not asserted)."""

import subprocess
import sys

import pytest

from neurolens import bench


@pytest.mark.slow
def test_quick_bench_runs_every_case(tmp_path):
    """On a tiny saved llama with the demo prompt formats (the demo model is not needed)."""
    import tiny
    model = tiny.save("llama", tmp_path / "llama")
    result = bench.run(quick=True, log=lambda m: None, model=str(model))
    assert result["errors"] == {}, result["errors"]
    names = " ".join(c["name"] for c in result["cases"])
    for key in ("capture overhead", "interactive capture", "vs nnsight", "edited generation",
                "sparse decoding", "statistical top-k", "PCA", "large capture", "GUI",
                "logit lens"):
        assert key in names, key
    for c in result["cases"]:
        assert c["subject"] == c["subject"]          # a number, not NaN
        if c["unit"] in ("s", "tok/s", "Hz"):
            assert c["subject"] > 0, c["name"]
        if c["reference"] is not None:
            assert c["ratio"] == pytest.approx(c["subject"] / c["reference"], rel=1e-6) or \
                c["ratio"] == pytest.approx(c["reference"] / c["subject"], rel=1e-6)
    assert "| case |" in bench.table(result)
    # the nnsight case carries its A/A control (neurolens timed against itself)
    nn = [c for c in result["cases"] if c["name"].startswith("vs nnsight")]
    assert nn and nn[0]["detail"]["a_a_ratio"] > 0


def test_importing_the_bench_loads_no_torch_and_no_case():
    """The GUI case runs its module as `python -m neurolens.bench.cases.gui`: the package must
    not import torch (the probe sets OpenMP up before torch loads) nor the case modules (runpy
    would run an already imported module a second time)."""
    code = ("import sys, neurolens.bench;"
            "bad=[m for m in sys.modules"
            " if m == 'torch' or m.startswith('neurolens.bench.cases.')];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
