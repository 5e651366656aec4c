"""ruff (configured in pyproject.toml, [tool.ruff]) finds nothing in the code, tests and tools."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["neurolens", "tests", "training", "tools", "packaging"]


def _ruff() -> str | None:
    exe = Path(sys.executable).parent / "ruff"
    return str(exe) if exe.is_file() else shutil.which("ruff")


def test_ruff_check():
    exe = _ruff()
    assert exe, "ruff is not installed: pip install -e '.[dev]'"
    r = subprocess.run([exe, "check", "--no-cache", "--output-format", "concise", *PATHS],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
