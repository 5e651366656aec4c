"""Pre-flight memory estimate: from the safetensors headers only, checked before the weights load.

References the code does not control: the tensors as the ``safetensors`` library loads them, and
the model as plain ``transformers`` builds it.
"""

import json

import pytest
import torch
from safetensors import safe_open

import neurolens as nl
import tiny
from neurolens.cli import main
from neurolens.engine import memory
from neurolens.errors import LoadError

BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Llama saved as one file in bfloat16, and a tiny GPT-2 in float32 in shards."""
    root = tmp_path_factory.mktemp("preflight")
    single = root / "single"
    tiny.build("llama").to(torch.bfloat16).save_pretrained(single)
    tiny.tokenizer().save_pretrained(single)
    sharded = root / "sharded"
    tiny.build("gpt2").save_pretrained(sharded, max_shard_size="20KB")
    tiny.tokenizer().save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    return {"single": single, "sharded": sharded}


def loaded_bytes(folder, dtype):
    """Sum of numel x element size of every stored tensor, loaded with safetensors and cast
    the way the model is loaded (floating tensors to ``dtype``)."""
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                t = t.to(dtype) if t.is_floating_point() else t
                total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("which", ["single", "sharded"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_header_estimate_equals_the_loaded_tensors(saved, which, dtype):
    folder = saved[which]
    est = memory.estimate(folder, dtype)
    assert est.weights_bytes == loaded_bytes(folder, dtype)
    assert est.dtype == str(dtype).removeprefix("torch.")
    assert est.n_files == len(list(folder.glob("*.safetensors")))
    assert est.needed_bytes > est.weights_bytes
    # and it is what plain transformers holds once loaded (tied weights are stored once)
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    held = sum(p.numel() * p.element_size() for p in m.parameters())
    assert est.weights_bytes == held


def test_auto_dtype_is_what_transformers_picks(saved):
    from transformers import AutoModelForCausalLM
    for folder in saved.values():
        est = memory.estimate(folder)        # no dtype: transformers' "auto"
        m = AutoModelForCausalLM.from_pretrained(folder)
        assert est.dtype == str(m.dtype).removeprefix("torch.")
        assert est.weights_bytes == loaded_bytes(folder, m.dtype)


def test_estimate_reads_only_the_header(saved, tmp_path):
    """The weights are not read: a file cut right after its header still gives the estimate."""
    src = saved["single"]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((src / "config.json").read_text())
    raw = (src / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    (cut / "model.safetensors").write_bytes(raw[:8 + n])
    assert memory.estimate(cut, "float32") == memory.estimate(src, "float32")


def small_budget(monkeypatch, free=10_000):
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": free)


def test_does_not_fit_is_one_line_with_the_options(saved, monkeypatch):
    small_budget(monkeypatch)
    folder = saved["sharded"]
    with pytest.raises(LoadError) as e:
        nl.load(folder)
    msg = str(e.value)
    assert "\n" not in msg
    est = memory.estimate(folder, torch.float32)
    assert memory.gb(est.needed_bytes) in msg and "10 kB is available on cpu" in msg
    assert "--dtype bfloat16" in msg and "--device auto" in msg and "a smaller model" in msg
    # already bfloat16: no point in offering it
    with pytest.raises(LoadError) as e:
        nl.load(saved["single"])
    assert "--dtype bfloat16" not in str(e.value) and "--device auto" in str(e.value)


def test_overrides_skip_the_check_and_auto_counts_the_disk(saved, monkeypatch):
    small_budget(monkeypatch)
    assert nl.load(saved["sharded"], check_memory=False).n_layers == 2
    monkeypatch.setenv(memory.ENV_SKIP, "1")
    assert nl.load(saved["sharded"]).n_layers == 2
    monkeypatch.delenv(memory.ENV_SKIP)
    # --device auto may offload to disk: a CPU budget too small for the weights still loads
    est = memory.preflight(saved["sharded"], device="auto")
    assert est is not None and est.weights_bytes == memory.estimate(saved["sharded"]).weights_bytes


def test_fits_when_the_budget_allows(saved, monkeypatch):
    est = memory.estimate(saved["sharded"], torch.float32)
    small_budget(monkeypatch, est.needed_bytes)
    assert memory.preflight(saved["sharded"], dtype="float32") == est
    small_budget(monkeypatch, est.needed_bytes - 1)
    with pytest.raises(LoadError):
        memory.preflight(saved["sharded"], dtype="float32")


@pytest.mark.parametrize("cmd", [["info"], ["run", "--prompt", "hi", "--max-new-tokens", "1"]])
def test_cli_exit_2_with_the_message(saved, monkeypatch, capsys, cmd):
    small_budget(monkeypatch)
    rc = main(cmd[:1] + ["-m", str(saved["sharded"])] + cmd[1:])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "available on cpu" in lines[0] and "--dtype bfloat16" in lines[0]
    assert "Traceback" not in err


def test_info_shows_the_estimate(saved, capsys):
    assert main(["info", "-m", str(saved["sharded"]), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    est = memory.estimate(saved["sharded"], torch.float32)
    assert payload["memory"]["weights_bytes"] == est.weights_bytes == \
        loaded_bytes(saved["sharded"], torch.float32)
    assert payload["memory"]["dtype"] == "float32"
    assert payload["memory"]["needed_bytes"] == est.needed_bytes
    assert payload["memory"]["available_bytes"] > 0
    assert main(["info", "-m", str(saved["single"])]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.strip().startswith("memory"))
    assert "at bfloat16" in line and "available on cpu" in line


def test_gpu_load_checks_the_gpu_and_the_cpu(saved, monkeypatch):
    seen = []

    def free(device="cpu"):
        seen.append(device)
        return 10_000 if device == "cuda:0" else 10**12
    monkeypatch.setattr(memory, "available_memory", free)
    with pytest.raises(LoadError, match="available on cuda:0"):
        memory.preflight(saved["sharded"], device="cuda:0")
    assert seen == ["cuda:0"]
    monkeypatch.setattr(memory, "available_memory",
                        lambda device="cpu": 10_000 if device == "cpu" else 10**12)
    with pytest.raises(LoadError, match="available on cpu"):
        memory.preflight(saved["sharded"], device="cuda:0")


@pytest.mark.gui
def test_gui_shows_the_message_in_a_dialog(qtbot, tmp_path, saved, monkeypatch):
    from PySide6.QtCore import QSettings

    from neurolens.gui.main_window import MainWindow
    small_budget(monkeypatch)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings=settings, autosave_path=str(tmp_path / "autosave.neurolens.json"))
    qtbot.addWidget(w)
    w.show()
    try:
        w.open_model(str(saved["sharded"]))
        qtbot.waitUntil(lambda: w._error_box is not None, timeout=60_000)
        text = w._error_box.text()
        assert "Could not load the model" in text and "available on cpu" in text
        assert "--device auto" in text and w.run_btn.isEnabled()
    finally:
        w.close()
