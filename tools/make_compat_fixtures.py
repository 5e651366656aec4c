"""Write the compatibility fixtures of issue 24: edit files, a session and an autosave written by
the neurolens that this script imports, plus ``expected.json`` with the facts and outputs that
``tests/test_compat.py`` checks against the current code.

Run it against the code whose files must keep opening (a worktree of that commit), from this
checkout, so that ``neurolens`` comes from the worktree::

    PYTHONPATH=/path/to/worktree PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 \\
        .venv/bin/python tools/make_compat_fixtures.py --out tests/fixtures/compat

Everything is written with the functions the app and the library use (``EditSet.save``, the
window's ``export_edits``, ``save_session`` and its autosave timer), never as hand-made JSON.
The models are the tests' tiny config-built ones (``tests/tiny.py`` and the tiny Stable Diffusion
pipeline of ``neurolens.demo.tiny_pipeline``, both seeded): nothing downloads, nothing is
committed but the small files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

# -- what the fixtures hold (the test reads the same values back from expected.json) ---------------
LM_ARCH, LM_SEED = "llama", 0
LM_PROMPTS = ["Compute: 47+38=", "The cat sat on the", "abc abc abc"]
LM_GEN = {"max_new_tokens": 8}                      # greedy, the defaults otherwise
SD_SEED = 3                                         # tests/conftest.py's tiny_pipeline_dir
SD_PROMPTS = ["a handwritten digit 3", "exhibit 7"]
SD_GEN = {"steps": 4, "guidance": 3.0, "seed": 5}


# -- the facts recorded here and checked by tests/test_compat.py (it calls these) ------------------
def array_facts(a) -> dict:
    a = np.ascontiguousarray(np.asarray(a))
    return {"shape": list(a.shape), "dtype": str(a.dtype), "sum": float(a.astype(np.float64).sum()),
            "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def op_facts(op) -> dict:
    """Every field of an op as plain JSON (arrays as shape, dtype, sum and hash)."""
    d = {"op": op.op}
    for f in fields(op):
        v = getattr(op, f.name)
        if isinstance(v, np.ndarray):
            v = array_facts(v)
        elif isinstance(v, tuple):
            v = list(v)
        d[f.name] = v
    return d


def logit_stats(a) -> np.ndarray:
    """[positions, 3]: the sum, L2 norm and max of each position's logits."""
    a = np.asarray(a, np.float64)
    return np.stack([a.sum(-1), np.sqrt((a * a).sum(-1)), a.max(-1)], -1)


def weights_sha(module) -> str:
    """Hash of every parameter and buffer (names and float32 values): the tiny model is the same."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def dumps(x, indent: str = "") -> str:
    """JSON with one item a line, except lists of scalars (and lists of those): one line each."""
    def flat(v):
        return not isinstance(v, (dict, list)) or (isinstance(v, list) and all(map(flat, v)))
    if isinstance(x, dict) and x:
        inner = indent + " "
        return "{\n" + ",\n".join(f"{inner}{json.dumps(k, ensure_ascii=False)}: "
                                   f"{dumps(v, inner)}" for k, v in x.items()) + f"\n{indent}}}"
    if isinstance(x, list) and x and not flat(x):
        inner = indent + " "
        return "[\n" + ",\n".join(inner + dumps(v, inner) for v in x) + f"\n{indent}]"
    return json.dumps(x, ensure_ascii=False)


def wait(app, cond, timeout=120.0, what="condition"):
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def sidecar_arrays(json_path: Path) -> dict:
    from safetensors.numpy import load_file
    d = json.loads(json_path.read_text())
    if not d.get("sidecar"):
        return {}
    return {k: array_facts(v) for k, v in sorted(load_file(str(json_path.with_name(
        d["sidecar"]))).items())}


# -- the language-model edit file ------------------------------------------------------------------
def lm_fixture(out: Path, tmp: Path, tiny) -> dict:
    import neurolens as nl
    from neurolens.spec.edits import (Adjust, EditSet, Gate, MaskWeights, ModelRef, Prune, Scale,
                                      Set, TopK)

    model_dir = tiny.save(LM_ARCH, tmp / f"tiny-{LM_ARCH}", seed=LM_SEED)
    lm = nl.load(model_dir)
    s0, s1 = "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"

    # Neuron Adjust, made deterministic: every value the run sees is far likelier under the
    # forget Gaussian (wide, centred on the values) than under the retain one (narrow, 2 away),
    # so p_f / (p_f + p_r) == 1.0 and the uniform draw never decides (checked below)
    cap = lm.capture(LM_PROMPTS, sites=[s0])
    vals = np.concatenate(cap[s0])
    adj_n = [1, 5, 7]
    mean_f = vals[:, adj_n].mean(0).astype(np.float32)
    adj = dict(mean_f=mean_f, std_f=np.full(3, 1.0, np.float32), mean_r=mean_f + 2.0,
               std_r=np.full(3, 0.05, np.float32))
    ops = [
        Prune("blocks.*.mlp.hook_post", [0, 3], note="a site pattern: both layers"),
        Scale(s0, [2, 4], factor=3.0, positions="last"),
        Set(s1, [10, 11], value=0.5, positions=[0, -1], note="first and last prompt token"),
        Set("blocks.1.mlp.hook_pre_linear", [5], value=-1.0, positions="all", steps=(0, 4),
            note="a step window (denoising steps; a language model runs it always)"),
        Adjust(s0, adj_n, seed=7, **adj),
        TopK("blocks.1.mlp.hook_pre", keep_fraction=0.25, mode="statistical", variant="soft"),
        Scale(s1, [20], factor=100.0, enabled=False, note="disabled: no effect"),
        MaskWeights(s0, (np.arange(32 * 64).reshape(32, 64) % 7 == 0).astype(np.uint8),
                    enabled=False, note="wmask runs on diffusion UNets; kept disabled here"),
    ]
    # the gate: a cube around prompt 0's last-token vector (with the edits above applied), so
    # prompt 0 abstains and the others generate
    gsite = "blocks.1.hook_resid_post"
    before = EditSet(ops)
    last = lm.capture(LM_PROMPTS[:1], sites=[gsite], edits=before)[gsite][0][-1]
    ops.append(Gate(gsite, mu=last.astype(np.float32), s=np.full(last.shape[0], 0.02, np.float32),
                    k=1.5, alpha=1.0, refusal=" [refused]", note="abstains on prompt 0"))
    es = EditSet(ops, ModelRef(f"tiny-{LM_ARCH} (tests/tiny.py, seed {LM_SEED})", lm.fingerprint))
    path = es.save(out / "lm_edits.json")

    # what the writing code reads back and does with the file
    es = EditSet.load(path)
    assert lm.check_edits(es) == [], lm.check_edits(es)
    edited = lm.generate(LM_PROMPTS, edits=es, **LM_GEN)
    base = lm.generate(LM_PROMPTS, **LM_GEN)
    assert edited[0].finish_reason == "abstain", edited[0]
    assert all(o.finish_reason != "abstain" for o in edited[1:]), edited
    for e, b in zip(edited, base):
        assert e.token_ids != b.token_ids, (e, b)       # every prompt's output depends on edits
    # Adjust does not depend on its random draws (another seed, the same output)
    other = EditSet.load(path)
    other[4].seed = 12345
    assert [o.token_ids for o in lm.generate(LM_PROMPTS, edits=other, **LM_GEN)] == \
        [o.token_ids for o in edited]
    # the last prompt position's logits, which every enabled op but the gate moves (dropping
    # one changes them; the gate only flags a row, checked by its refusal above)
    full = lm.logits(LM_PROMPTS, edits=es)
    logits = np.stack([a[-1] for a in full])
    for i, op in enumerate(es):
        if not op.enabled or op.op == "gate":
            continue
        less = EditSet([o for j, o in enumerate(EditSet.load(path)) if j != i])
        got = np.stack([a[-1] for a in lm.logits(LM_PROMPTS, edits=less)])
        assert np.abs(got - logits).max() > 1e-4, f"op {i} ({op.op}) changes nothing"
    return {
        "file": path.name,
        "model": {"builder": "tests/tiny.py", "arch": LM_ARCH, "seed": LM_SEED,
                  "weights_sha256": weights_sha(lm.hf), "fingerprint": lm.fingerprint,
                  "name_or_path": es.model.name_or_path},
        "n_ops": len(es), "n_enabled": len(es.enabled()),
        "ops": [op_facts(o) for o in es],
        "sidecar": json.loads(path.read_text())["sidecar"],
        "sidecar_arrays": sidecar_arrays(path),
        "generate": {"prompts": LM_PROMPTS, "kwargs": LM_GEN,
                     "token_ids": [o.token_ids for o in edited],
                     "texts": [o.text for o in edited],
                     "finish_reasons": [o.finish_reason for o in edited],
                     "baseline_token_ids": [o.token_ids for o in base]},
        "logits_last": {"prompts": LM_PROMPTS,
                        "values": np.round(logits.astype(np.float64), 6).tolist()},
        # every prompt position, summarised: [sum, L2 norm, max] of its logits
        "logits_positions": {"prompts": LM_PROMPTS,
                             "stats": [np.round(logit_stats(a), 6).tolist() for a in full]},
    }, model_dir, lm


# -- the diffusion edit file -----------------------------------------------------------------------
def sd_fixture(out: Path, tmp: Path) -> dict:
    import neurolens as nl
    try:
        from neurolens.testing import build_pipeline
    except ImportError:   # the fixtures were written by de7559a, before the builder moved
        from neurolens.demo.tiny_pipeline import build_pipeline
    from neurolens.spec.edits import EditSet, MaskWeights, ModelRef, Prune, Scale, Set

    d = tmp / "tiny-sd"
    build_pipeline(seed=SD_SEED).save_pretrained(d, safe_serialization=True)
    dm = nl.load(d)
    sites = list(dm.sites())
    down0, mid = sites[0], sites[1]
    out_f = dm.resolve(down0).module.out_features
    mask = (np.random.default_rng(0).random((out_f, dm.sites()[down0])) < 0.3).astype(np.uint8)
    ops = [MaskWeights(down0, mask, note="memorization-style weight mask"),
           Prune(mid, list(range(0, 256, 3)), steps=(1, 3), note="steps 1 and 2 only"),
           Scale("up1.a1.t0", [0, 1, 2, 3], factor=-2.0, note="site given by its alias"),
           Set(sites[2], [7], value=5.0, enabled=False)]
    es = EditSet(ops, ModelRef(f"tiny Stable Diffusion pipeline (neurolens.demo.tiny_pipeline."
                               f"build_pipeline, seed {SD_SEED})", dm.fingerprint))
    path = es.save(out / "diffusion_edits.json")
    es = EditSet.load(path)
    assert dm.check_edits(es) == []
    kw = dict(SD_GEN)
    edited = dm.generate(SD_PROMPTS, edits=es, **kw).images
    base = dm.generate(SD_PROMPTS, **kw).images
    assert np.abs(edited - base).max() > 0.01
    # the step window matters: the prune without it gives another image
    wide = EditSet.load(path)
    wide[1].steps = None
    assert np.abs(dm.generate(SD_PROMPTS, edits=wide, **kw).images - edited).max() > 1e-3
    return {
        "file": path.name,
        "model": {"builder": "tiny_pipeline.build_pipeline", "seed": SD_SEED,
                  "unet_weights_sha256": weights_sha(dm.unet), "fingerprint": dm.fingerprint,
                  "name_or_path": es.model.name_or_path, "sites": sites},
        "n_ops": len(es), "n_enabled": len(es.enabled()),
        "ops": [op_facts(o) for o in es],
        "sidecar": json.loads(path.read_text())["sidecar"],
        "sidecar_arrays": sidecar_arrays(path),
        "generate": {"prompts": SD_PROMPTS, "kwargs": kw, "shape": list(edited.shape),
                     "images": np.round(edited.astype(np.float64), 7).tolist(),
                     "max_abs_diff_to_baseline": float(np.abs(edited - base).max())},
    }


# -- the session and the autosave, as the window writes them ---------------------------------------
def session_facts(path: Path) -> dict:
    from neurolens.spec.session import Session
    s = Session.load(path)
    return {"file": path.name, "format": json.loads(path.read_text())["format"],
            "model": s.model, "prompts": [list(p) for p in s.prompts],
            "typed_prompt": s.typed_prompt,
            "neuron_sets": {k: [list(n) for n in v] for k, v in s.neuron_sets.items()},
            "view": s.view, "generation": s.generation,
            "n_ops": len(s.edits), "ops": [op_facts(o) for o in s.edits],
            "sidecar": json.loads(path.read_text()).get("sidecar"),
            "sidecar_arrays": sidecar_arrays(path)}


def window_facts(w) -> dict:
    """What a window shows after opening a session (without loading its model)."""
    return {"prompts": [list(p) for p in w.prompts], "prompt_answers": dict(w.prompt_answers),
            "typed_prompt": w.prompt_edit.toPlainText(),
            "neuron_sets": {k: [list(n) for n in v] for k, v in w.neuron_sets.items()},
            "ops": [[o.op, o.site, o.enabled, o.note] for o in w.edit_model.ops],
            "max_new_tokens": w.max_tokens.value(), "seed": w.seed.value(),
            "sample": w.sampling.isChecked(), "temperature": w.temperature.value(),
            "run_list": w.run_list.isChecked()}


def gui_fixtures(out: Path, tmp: Path, model_dir: Path) -> dict:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from neurolens.gui.main_window import MainWindow

    auto = tmp / "autosave" / "autosave.neurolens.json"
    w = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat),
                   autosave_path=str(auto))
    w.show()
    w.open_model(str(model_dir))
    wait(app, lambda: w.model_info is not None, what="the model to load")
    wait(app, lambda: not w.running)
    # prompt sets: typed ones, and a JSONL file with answers
    w.add_prompts(["Compute: 47+38=", "Compute: 12+30="], "forget")
    rows = tmp / "retain.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in (
        {"prompt": "The capital of France is", "answer": " Paris"},
        {"prompt": "Ünïcödé ✓ and a\nnewline", "answer": " yes"},
        {"prompt": "no answer here"})) + "\n")
    w.load_prompt_file(str(rows), "retain")
    w.prompt_edit.setPlainText("typed ✓ prompt\nsecond line")
    # neuron sets and edits from the selection, as the edits panel makes them
    ep = w.edits_panel
    w.select_neurons([("blocks.1.mlp.hook_post", 4), ("blocks.1.mlp.hook_post", 5),
                      ("blocks.0.mlp.hook_pre", 9)])
    w.save_selection_as_set("pair")
    ep.op.setCurrentText("prune")
    ep.positions.setCurrentText("all")
    assert ep.add_for_selection() == 2
    w.select_neurons([("blocks.0.mlp.hook_post", 2)])
    assert w.save_selection_as_set("") == "neurons 2"
    ep.op.setCurrentText("scale")
    ep.amount.setValue(0.25)
    ep.positions.setCurrentText("last")
    assert ep.add_for_selection() == 1
    ep.op.setCurrentText("set")
    ep.amount.setValue(1.5)
    ep.positions.setEditText("0, -1")
    assert ep.add_for_selection() == 1
    ep.edit_note(0, "prune ✓ note")
    ep.set_enabled(1, False)
    assert w.import_edits(str(out / "lm_edits.json"))       # every op kind, arrays included
    # run settings and view
    w.max_tokens.setValue(7)
    w.seed.setValue(42)
    w.sampling.setChecked(True)
    w.temperature.setValue(0.7)
    w.run_list.setChecked(True)
    w.stop_answer.setChecked(True)
    w.kind_combo.setCurrentText("mlp.hook_pre")
    w.stat_combo.setCurrentIndex(1)
    w.set_a.setCurrentText("retain")
    w.set_b.setCurrentText("forget")
    w.show_combo.setCurrentIndex(2)
    w.layer_spin.setValue(0)
    app.processEvents()
    w.save_session(str(out / "session.neurolens.json"))

    # later changes, saved by the autosave timer (the file a crash leaves behind)
    wait(app, lambda: not w.autosave_timer.isActive(), what="a pending autosave")
    w.add_prompts(["added after saving"], "late")
    ep.model.remove(2)          # the scale edit
    ep.refresh()
    ep.changed.emit()
    ep.set_enabled(0, False)
    w.seed.setValue(43)
    assert w._dirty and w.autosave_timer.isActive()
    wait(app, lambda: not w._dirty, timeout=30, what="the autosave")
    for f in auto.parent.iterdir():
        shutil.copy(f, out / f.name)

    facts = {"session": session_facts(out / "session.neurolens.json"),
             "autosave": session_facts(out / "autosave.neurolens.json")}
    # a fresh window opens both (model not loaded), as the app does
    for key, fn in (("session", "session.neurolens.json"), ("autosave", "autosave.neurolens.json")):
        w2 = MainWindow(settings=QSettings(str(tmp / f"s-{key}.ini"), QSettings.Format.IniFormat),
                        autosave_path=str(tmp / f"other-{key}.json"))
        assert w2.open_session(str(out / fn), load_model=False), w2.errors
        facts[key]["window"] = window_facts(w2)
        w2.close()
    w.close()
    wait(app, lambda: w.thread.isFinished(), what="the worker thread")
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the fixtures (created)")
    args = ap.parse_args()
    import neurolens
    root = Path(neurolens.__file__).resolve().parents[1]
    print(f"neurolens {neurolens.__version__} from {neurolens.__file__}", flush=True)
    sys.path.insert(0, str(root / "tests"))
    import tiny
    assert Path(tiny.__file__).resolve().is_relative_to(root), tiny.__file__
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import diffusers
    import torch
    import transformers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a fixed folder: the session records the model's path, so a rerun writes the same files
    tmp = Path(tempfile.gettempdir()) / "neurolens-compat-fixtures"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    os.environ["NEUROLENS_SETTINGS_DIR"] = str(tmp / "settings")   # never the user's own
    try:
        lm, model_dir, _ = lm_fixture(out, tmp, tiny)
        print("lm edits:", lm["generate"]["finish_reasons"], flush=True)
        sd = sd_fixture(out, tmp)
        print("diffusion edits: max diff to baseline", sd["generate"]["max_abs_diff_to_baseline"],
              flush=True)
        gui = gui_fixtures(out, tmp, model_dir)
        print("session:", gui["session"]["n_ops"], "edits; autosave:", gui["autosave"]["n_ops"],
              flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    expected = {
        "written_by": {"commit": commit, "neurolens": neurolens.__version__,
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "diffusers": diffusers.__version__,
                       "generator": "tools/make_compat_fixtures.py"},
        "lm_edits": lm, "diffusion_edits": sd, **gui}
    (out / "expected.json").write_text(dumps(expected) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {len(list(out.iterdir()))} files, {total} bytes, to {out}")


if __name__ == "__main__":
    main()
