import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads sleep while they wait instead of spinning: on a loaded 2-core machine spinning
# threads made a tiny matmul 30x slower (the GUI sets the same)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))
# the repository root, last: the training scripts (training/) are not in the installed package
sys.path.append(str(Path(__file__).resolve().parent.parent))

import tiny  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_settings(tmp_path_factory):
    """The app's settings (recent models) and autosave go to a temporary folder for the whole
    run, in this process and in every subprocess it starts (the variable is inherited): no test
    reads or writes the user's own (see neurolens.gui.settings)."""
    d = tmp_path_factory.mktemp("settings")
    old = os.environ.get("NEUROLENS_SETTINGS_DIR")
    os.environ["NEUROLENS_SETTINGS_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("NEUROLENS_SETTINGS_DIR", None)
    else:
        os.environ["NEUROLENS_SETTINGS_DIR"] = old


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Saved tiny checkpoints: {arch: folder}."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {a: tiny.save(a, root / a) for a in ("gpt2", "llama")}


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A saved tiny Stable Diffusion pipeline (random weights, 16x16 images)."""
    from neurolens.testing import build_pipeline
    d = tmp_path_factory.mktemp("tiny-sd")
    build_pipeline(seed=3).save_pretrained(d, safe_serialization=True)
    return d


@pytest.fixture
def gpt2():
    return tiny.lm("gpt2")


@pytest.fixture
def llama():
    return tiny.lm("llama")


def demo_model_present() -> bool:
    from neurolens.resources import model_path
    return (model_path() / "model.safetensors").is_file()


#: tests that need the shipped demo model (trained by training/train_lm.py; only committed
#: once it meets its skill targets)
needs_demo = pytest.mark.skipif(not demo_model_present(),
                                reason="demo model not shipped yet (resources/models/demo-lm)")
