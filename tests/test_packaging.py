"""The wheel carries the resources (demo model, prompt sets, icons) as package data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_resources(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("neurolens-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for skill in ("arithmetic", "comprehension", "code", "refusal", "benign"):
        assert f"neurolens/_resources/prompts/{skill}.jsonl" in names
    from conftest import demo_model_present
    if demo_model_present():
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert f"neurolens/_resources/models/demo-lm/{f}" in names
    from neurolens.resources import DEMO_DIFFUSION, model_path
    if (model_path(DEMO_DIFFUSION) / "model_index.json").is_file():
        for f in ("model_index.json", "unet/diffusion_pytorch_model.safetensors",
                  "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
            assert f"neurolens/_resources/models/demo-diffusion/{f}" in names
        for f in ("diffusion_memorized", "diffusion_ordinary"):
            assert f"neurolens/_resources/prompts/{f}.jsonl" in names
    assert "neurolens/_resources/icons/neurolens.svg" in names
    assert "neurolens/_resources/icons/neurolens-256.png" in names
    assert not any("experiments/" in n or n.endswith(".pyc") for n in names)
    # training stays in the checkout (training/); the data generators and test helpers ship
    assert not any(n.startswith(("training/", "neurolens/demo/")) for n in names)
    assert "neurolens/testing.py" in names
    assert {"neurolens/evals/corpus/__init__.py", "neurolens/evals/corpus/prompt_sets.py"} <= names


def test_resources_found_through_the_package():
    from neurolens.resources import model_path, prompts_dir, resources_dir
    assert (resources_dir() / "icons" / "neurolens.svg").is_file()
    assert (prompts_dir() / "arithmetic.jsonl").is_file()
    assert model_path().name == "demo-lm"


def test_desktop_entry_and_icon():
    text = (ROOT / "packaging" / "neurolens.desktop").read_text()
    assert "Exec=neurolens gui" in text and "Icon=neurolens" in text
    from neurolens.gui.icons import app_icon
    import os
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([])  # noqa: F841
    icon = app_icon()
    assert icon is not None and not icon.isNull()
    assert 256 in [s.width() for s in icon.availableSizes()]


def test_every_subpackage_is_listed_for_the_wheel():
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "neurolens").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    # the demo models' training scripts are not installed (training/ runs from a checkout)
    assert not any(p.split(".")[0] == "training" or p.startswith("neurolens.demo") for p in listed)
