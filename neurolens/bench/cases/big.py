"""``neurolens bench --big`` (not in CI): a Llama-3.2-shaped model with random bf16 weights,
made by the bench itself, and what each step of the loop costs against its weights and against
plain ``transformers`` doing the same step.

Steps: ``load``, ``run`` (generate new tokens), ``capture`` (every ``hook_post``), ``export``
(one prune edit) and ``gui`` (``gui --screenshot``: the window runs 40 shipped prompts with every
FFN captured and opens a neuron), each in a fresh process, so the peak resident memory
(``VmHWM``, mapped file pages included) is that step's own. The reference does the same step
with plain ``transformers`` and torch hooks (for the GUI: the same prompts' FFN rows kept as
float32 numpy, the data its views hold, with no window and no generation). ``cases`` (in the
bench process) makes the model in a temporary folder (removed after), runs ``python -m
neurolens.bench.cases.big step STEP SIDE FOLDER OUT`` per step and side, and reads one JSON
line back.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from neurolens.bench.measure import Case, fresh_process

#: Llama-3.2 shapes (the published configs), and a tiny one for the tests
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
               num_attention_heads=24, num_key_value_heads=8, head_dim=128, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=2048),
}
STEPS = ("load", "run", "capture", "export", "gui")
#: the budget of the issue: peak RSS <= weights + 0.8 GB + 0.1 x weights
BUDGET_FIXED = 0.8e9
BUDGET_FRACTION = 0.1
NEW_TOKENS = 16
PROMPTS = ["Compute: 47+38=", "The capital of France is", "def add(a, b):", "Once upon a time"]


def budget(weights: int) -> float:
    return weights + BUDGET_FIXED + BUDGET_FRACTION * weights


def make_model(folder: str | Path, shape: str = "3b", seed: int = 0) -> int:
    """Write a Llama-3.2-``shape``-shaped model with random bf16 weights and the demo model's
    tokenizer to ``folder`` (sharded at 5 GB as the hub's are); return the weights' bytes.
    Runs in a fresh process (the model is built whole before it is saved)."""
    fresh_process(__name__, ["make", shape, folder, seed], timeout=3600)
    return weights_bytes(folder)


def weights_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def _make(shape: str, folder: str, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from neurolens.engine.loading import default_model
    cfg = LlamaConfig(**SHAPES[shape], hidden_act="silu", max_position_embeddings=131072,
                      rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                       "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(cfg).eval()
    model.config.dtype = "bfloat16"
    model.save_pretrained(folder, max_shard_size="5GB")
    AutoTokenizer.from_pretrained(default_model()).save_pretrained(folder)


# -- one step in a fresh process ---------------------------------------------------------------
def _hwm() -> int:
    """Peak resident bytes of this process (VmHWM: anonymous and mapped file pages)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _prune_edits(n_layers: int):
    from neurolens.spec.edits import EditSet, Prune
    return EditSet([Prune(site=f"blocks.{_prune_layer(n_layers)}.mlp.hook_post",
                          neurons=[1, 2, 3])])


def _prune_layer(n_layers: int) -> int:
    return n_layers // 2


def _gui_prompts() -> list[str]:
    """The prompts ``gui --screenshot`` runs: 10 of each shipped skill set."""
    from neurolens.evals.skills import load_prompt_set
    return [r["prompt"] for skill in ("arithmetic", "comprehension", "code", "refusal")
            for r in load_prompt_set(skill, "probe", limit=10)]


def _ids(tok, prompts):
    return tok(prompts, return_tensors="pt", padding=True)


def _ours(step: str, folder: str, out: str) -> dict:
    import neurolens as nl
    if step == "gui":
        return _gui(folder)
    lm = nl.load(folder)
    if step == "run":
        lm.generate(PROMPTS, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    elif step == "capture":
        lm.capture(PROMPTS, ["blocks.*.mlp.hook_post"])
    elif step == "export":
        lm.export(_prune_edits(lm.n_layers), out)
    return {}


def _plain(step: str, folder: str, out: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if step == "run":
        enc = _ids(tok, PROMPTS)
        with torch.inference_mode():
            hf.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                        do_sample=False)
    elif step in ("capture", "gui"):
        # torch hooks on each MLP's down projection input, rows kept as float32 numpy; the
        # GUI's reference: the same over the GUI's 40 prompts (the data its views hold, with
        # no window and no generation)
        rows = []
        hooks = [layer.mlp.down_proj.register_forward_pre_hook(
            lambda m, a: rows.append(a[0].detach().float().reshape(-1, a[0].shape[-1]).numpy()))
            for layer in hf.model.layers]
        prompts = PROMPTS if step == "capture" else _gui_prompts()
        for k in range(0, len(prompts), 16):
            enc = _ids(tok, prompts[k:k + 16])
            with torch.inference_mode():
                hf(**enc)
        for h in hooks:
            h.remove()
    elif step == "export":           # zero the pruned columns of the down projection, save
        layer = _prune_layer(hf.config.num_hidden_layers)
        with torch.no_grad():
            hf.model.layers[layer].mlp.down_proj.weight[:, [1, 2, 3]] = 0
        hf.save_pretrained(out)
        tok.save_pretrained(out)
    return {}


def _gui(folder: str) -> dict:
    """``neurolens gui -m FOLDER --screenshot``, as the issue measured it: the window opens the
    model, runs the shipped prompt sets (40 prompts, 32 new tokens, every FFN captured),
    selects a neuron (the inspector and its logit lens), saves the PNG and quits."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from neurolens.gui.process import configure
    configure()
    from neurolens.gui.app import run_gui
    with tempfile.TemporaryDirectory(prefix="neurolens-big-shot-") as tmp:
        code = run_gui(folder, screenshot=os.path.join(tmp, "shot.png"), timeout=3000)
    if code != 0:
        raise RuntimeError(f"gui --screenshot exited with {code}")
    return {}


def step_main(step: str, side: str, folder: str, out: str) -> None:
    t = time.perf_counter()
    extra = (_ours if side == "ours" else _plain)(step, folder, out)
    print(json.dumps({"seconds": time.perf_counter() - t, "hwm": _hwm(), **extra}), flush=True)
    if step == "gui":      # the window's worker may still be busy (a projection): Qt would
        os._exit(0)        # abort the teardown of a running thread


def run_step(step: str, side: str, folder: str | Path, out: str | Path,
             nice: int = 0) -> dict:
    """``step`` by ``side`` ("ours" or "plain") in a fresh process: its seconds and peak RSS."""
    os.sync()     # the previous step's written files: flushed before this one is timed
    with tempfile.TemporaryDirectory(prefix="neurolens-bench-settings-") as settings:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NEUROLENS_SETTINGS_DIR": settings}
        try:
            return fresh_process(__name__, ["step", step, side, folder, out], timeout=3600,
                                 env=env, prefix=["nice", "-n", str(nice)] if nice else None,
                                 label=f"{step} ({side}): ")
        finally:
            shutil.rmtree(out, ignore_errors=True)


def measure(folder: str | Path, steps=STEPS, log=print, nice: int = 0) -> list[dict]:
    """Every step by neurolens and by plain transformers: rows of the table."""
    folder = Path(folder)
    weights = weights_bytes(folder)
    rows = []
    for step in steps:
        with tempfile.TemporaryDirectory(prefix="neurolens-big-out-") as tmp:
            ours = run_step(step, "ours", folder, Path(tmp) / "ours", nice)
            plain = run_step(step, "plain", folder, Path(tmp) / "plain", nice)
        row = {"step": step, "seconds": ours["seconds"], "hwm": ours["hwm"],
               "rss_per_weights": ours["hwm"] / weights,
               "plain_seconds": plain["seconds"], "plain_hwm": plain["hwm"],
               "vs_plain_rss": ours["hwm"] / plain["hwm"],
               "vs_plain_time": ours["seconds"] / plain["seconds"],
               "budget_hwm": budget(weights), "ok": ours["hwm"] <= budget(weights)}
        log(f"  {step}: {ours['seconds']:.1f} s, {ours['hwm'] / 1e9:.2f} GB "
            f"({row['rss_per_weights']:.2f}x weights); transformers {plain['seconds']:.1f} s, "
            f"{plain['hwm'] / 1e9:.2f} GB")
        rows.append(row)
    return rows


def table(rows: list[dict], weights: int) -> str:
    lines = [f"weights {weights / 1e9:.2f} GB, budget {budget(weights) / 1e9:.2f} GB", "",
             "| step | wall | peak RSS | RSS / weights | transformers: wall, peak RSS | "
             "vs transformers (RSS) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['seconds']:.1f} s | {r['hwm'] / 1e9:.2f} GB | "
                     f"{r['rss_per_weights']:.2f}x | {r['plain_seconds']:.1f} s, "
                     f"{r['plain_hwm'] / 1e9:.2f} GB | {r['vs_plain_rss']:.2f}x |")
    return "\n".join(lines)


def cases(shape: str = "3b", log=print, steps=STEPS, nice: int = 0) -> list[Case]:
    """Make the model in a temporary folder, measure every step, remove the folder."""
    with tempfile.TemporaryDirectory(prefix=f"neurolens-big-{shape}-") as tmp:
        log(f"  making a Llama-3.2-{shape}-shaped random bf16 model…")
        weights = make_model(tmp, shape)
        rows = measure(tmp, steps, log, nice)
    log(table(rows, weights))
    out = []
    for r in rows:
        gb = r["hwm"] / 1e9
        out.append(Case(f"big {shape}: {r['step']} peak RSS (weights {weights / 1e9:.2f} GB)",
                        gb, r["plain_hwm"] / 1e9, r["vs_plain_rss"],
                        f"<= {budget(weights) / 1e9:.2f}", r["ok"], unit="GB",
                        detail={k: (round(v, 3) if isinstance(v, float) else v)
                                for k, v in r.items()}))
    return out


def run(shape: str = "3b", log=print, steps=STEPS, nice: int = 0) -> dict:
    """``neurolens bench --big``: the result in the form ``neurolens.bench.run`` gives."""
    from dataclasses import asdict

    from neurolens.bench.report import machine
    errors: dict[str, str] = {}
    out: list[Case] = []
    log(f"bench: big-{shape}…")
    try:
        out = cases(shape, log, steps, nice)
    except Exception as e:  # noqa: BLE001 - reported like any failing case
        errors[f"big-{shape}"] = f"{type(e).__name__}: {e}"
    return {"machine": machine(), "quick": False, "cases": [asdict(c) for c in out],
            "errors": errors}


if __name__ == "__main__":
    if sys.argv[1] == "make":
        _make(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        step_main(*sys.argv[2:6])
