"""Export an edited checkpoint that plain ``transformers`` loads.

Edits that are exact in the weights (linear in one neuron, every position) are baked into a copy
of the model; the rest are written as an EditSet sidecar (``neurolens_edits.json``) that
``neurolens.load(folder)`` re-applies. ``NEUROLENS.md`` in the folder says which is which.
The write is atomic (temporary folder, then rename) and never replaces a non-empty folder unless
``force`` is set.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neurolens.engine.adapters import get_module
from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, EditSet, ModelRef
from neurolens.spec.sites import is_pattern, match_sites, parse_site

SIDECAR_NAME = "neurolens_edits.json"
#: activations with act(0) == 0, so zeroing the pre-activation removes the neuron exactly
ZERO_AT_ZERO = {"silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh",
                "gelu_python", "relu", "quick_gelu", "gelu_10", "mish", "relu2", "gelu_accurate"}


@dataclass
class ExportReport:
    path: Path
    baked: list[str] = field(default_factory=list)
    sidecar: list[str] = field(default_factory=list)

    @property
    def needs_neurolens(self) -> bool:
        return bool(self.sidecar)

    def summary(self) -> str:
        lines = [f"exported to {self.path}"]
        if self.baked:
            lines.append(f"baked into the weights ({len(self.baked)}): " + "; ".join(self.baked))
        if self.sidecar:
            lines.append(f"NOT baked, kept as {SIDECAR_NAME} ({len(self.sidecar)}), applied only "
                         "when loaded with neurolens: " + "; ".join(self.sidecar))
        if not self.baked and not self.sidecar:
            lines.append("no edits: the checkpoint equals the loaded model")
        else:
            lines.append("plain transformers loads the folder; " +
                         ("it reproduces the edited model exactly" if not self.sidecar else
                          "it gives the baked edits only (use neurolens.load for all of them)"))
        return "\n".join(lines)


def _activation(cfg) -> str:
    for k in ("hidden_act", "activation_function", "hidden_activation"):
        v = getattr(cfg, k, None)
        if isinstance(v, str):
            return v
    return ""


def _scale_outputs(mod, idx: list[int], factor: float, conv: bool, off: int = 0) -> None:
    j = torch.tensor(idx) + off
    if conv:
        mod.weight[:, j] *= factor
    else:
        mod.weight[j, :] *= factor
    if getattr(mod, "bias", None) is not None:
        mod.bias[j] *= factor


def _bake_one(lm, hf, op: EditOp, site: str) -> bool:
    """Apply ``op`` at ``site`` to the weights of ``hf`` if exact; return whether it was baked."""
    if op.op not in ("prune", "scale", "set") or op.positions != "all" or op.steps is not None:
        return False
    s = parse_site(site)
    arch = lm.adapter.arch
    if s is None or arch is None:
        return False
    nat = arch.sites.get(s.kind)
    factor = 0.0 if op.op == "prune" else getattr(op, "factor", None)
    layer_path = ".".join(p for p in (lm.adapter.layers_path, str(s.layer)) if p)
    if s.kind == "mlp.hook_post":
        down = get_module(hf, f"{layer_path}.{arch.down}")
        j = torch.tensor(op.neurons)
        col = (lambda: down.weight[j, :]) if arch.conv1d else (lambda: down.weight[:, j])
        if op.op == "set":
            if getattr(down, "bias", None) is None:
                return False
            contrib = col() * op.value           # [.., n] (or [n, ..] for conv1d)
            down.bias += contrib.sum(0) if arch.conv1d else contrib.sum(1)
            factor = 0.0
        if arch.conv1d:
            down.weight[j, :] *= factor
        else:
            down.weight[:, j] *= factor
        return True
    if op.op == "set":
        return False
    if s.kind == "mlp.hook_pre":
        if op.op != "prune" or _activation(hf.config) not in ZERO_AT_ZERO:
            return False
        mod_rel = nat.module
    elif s.kind == "mlp.hook_pre_linear":
        mod_rel = nat.module
    elif s.kind == "hook_mlp_out":
        mod_rel = arch.down
    else:
        return False
    mod = get_module(hf, f"{layer_path}.{mod_rel}")
    out_dim = mod.weight.shape[1] if arch.conv1d else mod.weight.shape[0]
    part = nat.part if s.kind != "hook_mlp_out" else None
    off = part[0] * (out_dim // part[1]) if part else 0
    _scale_outputs(mod, op.neurons, factor, arch.conv1d, off)
    return True


def with_site(op: EditOp, site: str) -> EditOp:
    """The op itself when it already names ``site``, else a copy acting on ``site`` (one
    concrete site of a pattern)."""
    if op.site == site:
        return op
    c = copy.copy(op)
    c.site = site
    return c


def export(lm, edits: EditSet | None, out_dir: str | os.PathLike, force: bool = False
           ) -> ExportReport:
    out = Path(out_dir)
    check_target(out, force)
    edits = edits or EditSet()
    lm.check_edits(edits)
    ops = list(lm.base_edits.enabled()) + edits.enabled()
    report = ExportReport(out)
    sidecar_ops: list[EditOp] = []
    hf = copy.deepcopy(lm.hf)
    widths = lm.sites()
    with torch.no_grad():
        for op in ops:
            sites = match_sites(op.site, list(widths)) if is_pattern(op.site) else [op.site]
            for site in sites:
                one = with_site(op, site)
                if _bake_one(lm, hf, one, site):
                    report.baked.append(one.describe())
                else:
                    sidecar_ops.append(one)
                    report.sidecar.append(one.describe())

    def write(tmp: Path) -> None:
        hf.save_pretrained(tmp, safe_serialization=True)
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(tmp)
    write_export(out, write, sidecar_ops, _readme(lm, report))
    return report


def check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"export target {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"export target {out} is not empty (use --force to replace it)")


def write_export(out: Path, write, sidecar_ops: list[EditOp], readme: str) -> None:
    """Atomically fill ``out``: ``write(tmp)`` saves the weights, then the sidecar (edits that
    are not baked) and NEUROLENS.md; the temporary folder replaces ``out`` at the end."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if sidecar_ops:
            EditSet(sidecar_ops, ModelRef(str(out), "")).save(tmp / SIDECAR_NAME)
        (tmp / "NEUROLENS.md").write_text(readme)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _readme(lm, r: ExportReport) -> str:
    lines = ["# Exported by neurolens", "",
             f"Source model: `{lm.name_or_path}` ({lm.model_type}, fingerprint {lm.fingerprint}).",
             ""]
    if r.baked:
        lines += ["## Baked into the weights", "",
                  "These edits are part of `model.safetensors`; plain `transformers` applies them:",
                  ""] + [f"- {b}" for b in r.baked] + [""]
    if r.sidecar:
        lines += ["## Not baked: needs neurolens", "",
                  f"These edits cannot be written into the weights exactly (they depend on the "
                  f"input, the position or a random draw). They are stored in `{SIDECAR_NAME}` "
                  "and re-applied by `neurolens.load(\"<this folder>\")`; plain "
                  "`transformers` ignores them:", ""] + [f"- {s}" for s in r.sidecar] + [""]
    if not r.baked and not r.sidecar:
        lines += ["No edits: this checkpoint equals the source model.", ""]
    return "\n".join(lines)
