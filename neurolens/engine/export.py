"""Export an edited checkpoint that plain ``transformers`` / ``diffusers`` loads.

Edits that are exact in the weights (linear in one neuron, every position, every step) are baked
into the weights (of a copy of the model, or tensor by tensor from an LM's safetensors files:
:mod:`neurolens.engine.export_stream`); the rest are written as an EditSet sidecar
(``neurolens_edits.json``) that ``neurolens.load(folder)`` re-applies. ``NEUROLENS.md`` in the
folder says which is which. The write is atomic (temporary folder, then rename) and never
replaces a non-empty folder unless ``force`` is set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neurolens.errors import InputError
from neurolens.spec.edits import EditOp, EditSet, ModelRef

SIDECAR_NAME = "neurolens_edits.json"


@dataclass
class ExportReport:
    path: Path
    baked: list[str] = field(default_factory=list)
    sidecar: list[str] = field(default_factory=list)
    streamed: bool = False        # written tensor by tensor from the source files
    loader: str = "plain transformers"   # what reads the folder without neurolens

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
            lines.append(f"{self.loader} loads the folder; " +
                         ("it reproduces the edited model exactly" if not self.sidecar else
                          "it gives the baked edits only (use neurolens.load for all of them)"))
        return "\n".join(lines)


def export(model, edits: EditSet | None, out_dir: str | os.PathLike, force: bool = False, *,
           stream: bool | None = None) -> ExportReport:
    """Export ``model`` with ``edits`` (and the edits it was loaded with) into ``out_dir``.

    Per op and concrete site: an op acting on every position at every step is baked into the
    weights when its registered baking rule accepts the family's
    :class:`~neurolens.engine.baking.BakeTarget` for the site; every other op goes to the
    sidecar. ``stream``: None (default) streams an LM loaded from safetensors files tensor by
    tensor (:mod:`neurolens.engine.export_stream`) and exports anything else in memory; False
    always exports in memory (a copy of the weights; the family writes the folder with
    ``_export_copy``, ``_save_export``); True streams or raises InputError. Both paths write the
    same tensors."""
    out = Path(out_dir)
    check_target(out, force)
    ops = model.planned_ops(edits or EditSet())
    if stream is not False:
        from neurolens.engine import export_stream
        try:
            return _export_streamed(model, ops, out)
        except export_stream.NotStreamable as e:
            if stream:
                raise InputError(f"cannot stream the export of {model.name_or_path}: {e}") from None
    return _export_in_memory(model, ops, out)


def _exact_rule(op: EditOp):
    """The op's baking rule when it acts on every position at every step, else None."""
    from neurolens.engine import ops as op_registry
    rule = op_registry.lookup(op.op).bake
    return rule if op.positions == "all" and op.steps is None else None


def _record(report: ExportReport, sidecar_ops: list[EditOp], op: EditOp, baked: bool) -> None:
    if baked:
        report.baked.append(op.describe())
    else:
        sidecar_ops.append(op)
        window = f" (steps {op.steps[0]}-{op.steps[1]})" if op.steps is not None else ""
        report.sidecar.append(op.describe() + window)


def _export_in_memory(model, ops: list[EditOp], out: Path) -> ExportReport:
    report = ExportReport(out, loader=model.export_words.get("loader", "plain transformers"))
    sidecar_ops: list[EditOp] = []
    weights = model._export_copy()
    with torch.no_grad():
        for op in ops:
            rule = _exact_rule(op)
            target = model.bake_target(weights, op.site) if rule is not None else None
            _record(report, sidecar_ops, op, target is not None and rule(op, target))
    write_export(out, lambda tmp: model._save_export(weights, tmp), sidecar_ops,
                 readme(model, report))
    return report


def _export_streamed(model, ops: list[EditOp], out: Path) -> ExportReport:
    from neurolens.engine import export_stream
    plan = export_stream.make_plan(model)          # NotStreamable before anything is written
    report = ExportReport(out, streamed=True,
                          loader=model.export_words.get("loader", "plain transformers"))
    sidecar_ops: list[EditOp] = []
    rules = {i: r for i, op in enumerate(ops) if (r := _exact_rule(op)) is not None}

    def write(tmp: Path) -> None:
        baked = export_stream.write_weights(model, plan, ops, rules, tmp)
        for i, op in enumerate(ops):
            _record(report, sidecar_ops, op, baked[i])
        export_stream.write_config(model, tmp)
    write_export(out, write, sidecar_ops, lambda: readme(model, report))
    return report


def check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"export target {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"export target {out} is not empty (use --force to replace it)")


def write_export(out: Path, write, sidecar_ops: list[EditOp], readme) -> None:
    """Atomically fill ``out``: ``write(tmp)`` saves the weights, then the sidecar (edits that
    are not baked; ``write`` may still add to the list) and NEUROLENS.md (``readme``: the text,
    or a function giving it once ``write`` is done); the temporary folder replaces ``out`` at the
    end."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if sidecar_ops:
            EditSet(sidecar_ops, ModelRef(str(out), "")).save(tmp / SIDECAR_NAME)
        (tmp / "NEUROLENS.md").write_text(readme() if callable(readme) else readme)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def readme(model, r: ExportReport) -> str:
    """NEUROLENS.md of an export; the family's ``export_words`` name its parts."""
    w = model.export_words
    lines = ["# Exported by neurolens", "",
             f"Source {w['source']}: `{model.name_or_path}` ({model.model_type}, fingerprint "
             f"{model.fingerprint}).", ""]
    if r.baked:
        lines += [f"## Baked into the {w['weights']}", "",
                  f"These edits are part of the saved weights; plain {w['library']} applies them:",
                  ""] + [f"- {b}" for b in r.baked] + [""]
    if r.sidecar:
        lines += ["## Not baked: needs neurolens", "",
                  f"These edits cannot be written into the weights exactly ({w['why']}). They "
                  f"are stored in `{SIDECAR_NAME}` and re-applied by "
                  f"`neurolens.load(\"<this folder>\")`; plain {w['library']} ignores them:",
                  ""] + [f"- {s}" for s in r.sidecar] + [""]
    if not r.baked and not r.sidecar:
        lines += [f"No edits: this {w['source']} equals the source.", ""]
    return "\n".join(lines)
