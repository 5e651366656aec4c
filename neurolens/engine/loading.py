"""Load models safely: local folders or hub ids, safetensors only unless pickle is allowed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from neurolens.engine.dtypes import torch_dtype
from neurolens.engine.memory import preflight
from neurolens.errors import LoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_model() -> str:
    from neurolens.resources import model_path
    return str(model_path())


def check_folder(path: Path, allow_pickle: bool) -> None:
    """Raise LoadError for folders that are not (safely) loadable model checkpoints."""
    if not (path / "config.json").is_file():
        if (path / "model_index.json").is_file():
            return
        raise LoadError(f"{path} is not a model folder (no config.json)")
    try:
        json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}/config.json is corrupt ({e.__class__.__name__}: {e})") from None
    files = [p.name for p in path.iterdir()]
    safe = [f for f in files if f.endswith(".safetensors") or f.endswith(".safetensors.index.json")]
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
    if not safe:
        if pickled and not allow_pickle:
            raise LoadError(f"{path} has only pickle weights ({', '.join(sorted(pickled))}); "
                            "pickle files can run code when loaded. Convert them to safetensors, "
                            "or pass --allow-pickle (allow_pickle=True) if you trust the source")
        if not pickled:
            raise LoadError(f"{path} has no weights (no *.safetensors file)")


def load(name_or_path: str | os.PathLike | None = None, *, device: str = "cpu", dtype=None,
         allow_pickle: bool = False, trust_remote_code: bool = False,
         apply_sidecar: bool = True, check_memory: bool = True, max_memory=None):
    """Load a causal LM (or encoder) from a local folder or a hub id; default: the demo model.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (``device_map="auto"`` through
    accelerate, for models larger than one device: layers over the GPUs present, the CPU and
    disk, within ``max_memory``, e.g. ``{"cpu": "8GiB", 0: "20GiB"}``; see :mod:`.offload`).
    ``dtype``: float32 (default on CPU),
    float16, bfloat16 or "auto". ``check_memory``: estimate the memory first from the
    safetensors headers and refuse with one line when it will not fit (:mod:`.memory`).
    """
    import torch  # noqa: F401 - import cost belongs here, not at package import

    from neurolens.engine.lm import LanguageModel

    name = str(name_or_path) if name_or_path is not None else default_model()
    path = Path(name).expanduser()
    local = path.exists()
    if not local:
        looks_local = (name.startswith((".", "/", "~")) or name.count("/") > 1
                       or not _HUB_ID.match(name))
        if name_or_path is None:
            raise LoadError(f"the demo model is missing at {path}: reinstall neurolens or run "
                            "`python training/train_lm.py` in a source checkout")
        if looks_local:
            raise LoadError(f"model folder not found: {name}")
    else:
        if not path.is_dir():
            raise LoadError(f"{name} is a file; give the model's folder")
        check_folder(path, allow_pickle)
        if (path / "model_index.json").is_file() and not (path / "config.json").is_file():
            from neurolens.engine.diffusion import load_pipeline
            return load_pipeline(path, device=device, dtype=dtype)
        from neurolens.engine.snn.network import is_snn_folder
        if is_snn_folder(path):     # our own spiking-network format (model_type neurolens-snn)
            from neurolens.engine.snn.model import load_snn
            return load_snn(path, device=device, apply_sidecar=apply_sidecar)

    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    src = str(path) if local else name
    td = torch_dtype(dtype)
    kw = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(src, **kw)
    except ValueError as e:
        raise LoadError(f"unsupported model '{name}': {str(e).splitlines()[0]}") from None
    except OSError as e:
        if local:
            raise LoadError(f"cannot read the config of {name}: {str(e).splitlines()[0]}") from None
        raise LoadError(f"could not load '{name}': not a local folder, and the Hugging Face hub "
                        f"did not answer ({str(e).splitlines()[0][:160]})") from None
    if max_memory is not None and device != "auto":
        raise LoadError("max_memory is for device='auto' (--device auto)")
    preflight(path if local else name, device=device, dtype=td, enabled=check_memory,
              max_memory=max_memory)
    mkw = dict(kw)
    mkw["use_safetensors"] = None if allow_pickle else True
    if td is not None:
        mkw["dtype"] = td
    if device == "auto":
        from neurolens.engine.offload import from_pretrained_kwargs
        mkw.update(from_pretrained_kwargs(max_memory))
    try:
        try:
            hf = AutoModelForCausalLM.from_pretrained(src, config=config, **mkw)
        except ValueError as e:
            if "Unrecognized configuration class" not in str(e):
                raise
            hf = AutoModel.from_pretrained(src, config=config, **mkw)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safetensors" in msg.lower() and not allow_pickle and not local:
            msg += " (pickle weights are refused; pass --allow-pickle if you trust the source)"
        raise LoadError(f"could not load the weights of '{name}': {msg[:300]}") from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise all sorts of things
        raise LoadError(f"could not load '{name}': {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300] if str(e) else ''}") from None
    if device not in ("auto", "cpu"):
        try:
            hf = hf.to(device)
        except (RuntimeError, AssertionError) as e:
            raise LoadError(f"device '{device}' is not usable: {str(e).splitlines()[0]}") from None
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - a model without tokenizer can still be captured by ids
        tok = None
    notes = []
    base = None
    if local and apply_sidecar:
        from neurolens.engine.export import SIDECAR_NAME
        from neurolens.spec.edits import EditSet
        side = path / SIDECAR_NAME
        if side.is_file():
            base = EditSet.load(side)
            notes.append(f"re-applying {len(base)} edit(s) from {SIDECAR_NAME} that are not "
                         "baked into the weights")
    if device == "auto":
        from neurolens.engine.offload import input_device
        dev = str(input_device(hf))
    else:
        dev = device
    lm = LanguageModel(hf, tok, name_or_path=name, device=dev, base_edits=base, notes=notes)
    return lm
