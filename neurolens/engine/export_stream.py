"""Export that streams: an LM's edited checkpoint written tensor by tensor from its source files.

The in-memory export (:func:`neurolens.engine.export.export` with ``stream=False``) bakes the
edits into a deep copy of the whole model, which needs the weights twice. When the loaded model
came from a folder with safetensors files, this module writes the same checkpoint holding only
what changes:

- the output has the source's files (one ``model.safetensors``, or the same shards and an index),
  with the names ``save_pretrained`` would write (tied copies dropped, conversions reverted) in
  the dtype each tensor has in the loaded model;
- a tensor no exact edit touches is written from the loaded model in runs of rows (no copy on
  the CPU; a run at a time from another device); a tensor accelerate offloaded (a placeholder)
  is read from its source file instead (memory-mapped, one tensor at a time) and cast to the
  loaded dtype. (Reading every tensor from its file and checking it equal to the loaded one cost
  a second read of all weights: 3.5 s of an 18 s export at 1B.)
- the layers an exact edit touches are copied (only them), and the ops' own baking rules
  (:mod:`neurolens.engine.ops`) edit the copies exactly as they edit the in-memory export's copy;
  each copy is freed once written.

Anything that does not match (no source files, a quantized, adapter or remote-code model, a
name or shape the files lack) raises :class:`NotStreamable`
and :func:`~neurolens.engine.export.export` falls back to the in-memory path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neurolens.engine.baking import BakeTarget, WeightView
from neurolens.engine.safetensors_files import (DTYPE_BYTES, INDEX, TORCH_CODES, ShardWriter,
                                                TensorInfo, local_snapshot, read_header,
                                                weight_files)
from neurolens.spec.edits import EditOp


class NotStreamable(Exception):
    """The export cannot stream from the source files (the reason is the message)."""


@dataclass
class Plan:
    files: list[Path]
    sharded: bool
    live: dict[str, torch.Tensor]        # output name -> the loaded tensor (state-dict view)
    live_name: dict[str, str]            # output name -> its name in the loaded model
    where: dict[str, Path]               # output name -> the source file holding it
    infos: dict[str, TensorInfo]         # output name -> output dtype code and shape


@dataclass
class _Group:
    """Layers linked by exact ops: copied together, edited by their ops in order, freed once all
    their tensors are written."""
    modules: dict[int, torch.nn.Module] = field(default_factory=dict)   # id -> live module
    ops: list[int] = field(default_factory=list)
    names: dict[str, tuple[int, str]] = field(default_factory=dict)     # out name -> (id, param)
    tensors: dict[str, torch.Tensor] | None = None


def source_folder(model) -> Path | None:
    """The folder the model was loaded from: a local folder, or the hub cache's snapshot."""
    p = Path(str(model.name_or_path)).expanduser()
    return p if p.is_dir() else local_snapshot(str(model.name_or_path))


def make_plan(model) -> Plan:
    """What the streamed export writes, checked against the source files' headers."""
    hf = getattr(model, "hf", None)
    if hf is None:
        raise NotStreamable("not a transformers model")
    from transformers import PreTrainedModel
    if not isinstance(hf, PreTrainedModel):
        raise NotStreamable("not a transformers model")
    if getattr(hf, "hf_quantizer", None) is not None or \
            getattr(hf, "_hf_peft_config_loaded", False) or hf.is_remote_code():
        raise NotStreamable("quantized, adapter or remote-code model")
    folder = source_folder(model)
    files = weight_files(folder) if folder is not None else None
    if not files:
        raise NotStreamable("the model has no safetensors source files")
    try:
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError as e:   # another transformers layout: keep the in-memory path
        raise NotStreamable(f"transformers lacks {e.name}") from None
    # the names save_pretrained writes: its own steps, on the state dict's views (no copies)
    sd = hf.state_dict()
    for k in hf._keys_to_ignore_on_save or ():
        sd.pop(k, None)
    owner = {id(t): n for n, t in sd.items()}
    out = revert_weight_conversion(hf, remove_tied_weights_from_state_dict(dict(sd), hf))
    where: dict[str, Path] = {}
    headers = {}
    for f in files:
        headers[f] = read_header(f)
        for k in headers[f]:
            where.setdefault(k, f)
    infos = {}
    for name, t in out.items():
        if id(t) not in owner:
            raise NotStreamable(f"{name} is converted when saved")
        code = TORCH_CODES.get(str(t.dtype).removeprefix("torch."))
        src = headers[where[name]].get(name) if name in where else None
        if code is None or src is None or src.shape != tuple(t.shape):
            raise NotStreamable(f"{name} is not in the source files as loaded")
        infos[name] = TensorInfo(code, tuple(t.shape))
    return Plan(files, files[0].name != "model.safetensors", dict(out),
                {k: owner[id(t)] for k, t in out.items()}, {k: where[k] for k in out}, infos)


def _views(target: BakeTarget) -> list[tuple[str, WeightView]]:
    return [(f.name, getattr(target, f.name)) for f in dataclasses.fields(target)
            if isinstance(getattr(target, f.name), WeightView)]


def plan_groups(model, plan: Plan, ops: list[EditOp], rules: dict) -> tuple[list, dict, list]:
    """``(targets, group_of, groups)``: each op's BakeTarget on the loaded model (None: not
    exact), the group of every output name an exact op changes, and the groups."""
    hf = model.hf
    live_names: dict[int, list[str]] = {}
    for n, p in hf.named_parameters(remove_duplicate=False):
        live_names.setdefault(id(p), []).append(n)
    live_to_out = {n: o for o, n in plan.live_name.items()}
    targets: list[BakeTarget | None] = []
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i
    for i, op in enumerate(ops):
        t = model.bake_target(hf, op.site) if rules.get(i) is not None else None
        targets.append(t)
        mods = [id(v.module) for _, v in _views(t)] if t is not None else []
        for m in mods[1:]:
            parent[find(m)] = find(mods[0])
        for m in mods[:1]:
            find(m)
    groups: dict[int, _Group] = {}
    for i, t in enumerate(targets):
        if t is None or not _views(t):
            continue
        g = groups.setdefault(find(id(_views(t)[0][1].module)), _Group())
        g.ops.append(i)
        for _, v in _views(t):
            g.modules[id(v.module)] = v.module
    group_of: dict[str, _Group] = {}
    for g in groups.values():
        for mid, mod in g.modules.items():
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                outs = [live_to_out[n] for n in live_names.get(id(p), []) if n in live_to_out]
                if not outs:
                    raise NotStreamable(f"a baked parameter ({pname}) is not saved")
                for o in outs:
                    g.names[o] = (mid, pname)
                    group_of[o] = g
    return targets, group_of, list(groups.values())


def _shadow(mod: torch.nn.Module, value) -> torch.nn.Module:
    """A shallow copy of ``mod`` whose parameters are fresh copies (``value(name, param)``); the
    loaded module is not touched."""
    c = copy.copy(mod)
    c.__dict__["_parameters"] = {
        k: None if p is None else torch.nn.Parameter(value(k, p), requires_grad=False)
        for k, p in mod._parameters.items()}
    return c


class Baker:
    """Applies the exact ops group by group, when the first tensor of a group is written."""

    def __init__(self, model, plan: Plan, ops: list[EditOp], rules: dict):
        self.plan, self.ops, self.rules = plan, ops, rules
        self.targets, self.group_of, self.groups = plan_groups(model, plan, ops, rules)
        self.results: dict[int, bool] = {}
        for i, t in enumerate(self.targets):
            if t is not None and not _views(t):
                self.results[i] = bool(rules[i](ops[i], t))
        self._left = {id(g): set(g.names) for g in self.groups}

    def has(self, name: str) -> bool:
        return name in self.group_of

    def tensor(self, name: str) -> torch.Tensor:
        g = self.group_of[name]
        if g.tensors is None:
            self._bake(g)
        t = g.tensors[name]
        self._left[id(g)].discard(name)
        if not self._left[id(g)]:
            g.tensors = None          # written: free the copies
        return t

    def _bake(self, g: _Group) -> None:
        param_out = {v: o for o, v in g.names.items()}

        def value(mid):
            def v(k, p):
                if p.device.type != "meta":
                    return p.detach().clone()
                return read_source(self.plan, param_out[(mid, k)])
            return v
        clones = {mid: _shadow(m, value(mid)) for mid, m in g.modules.items()}
        with torch.no_grad():
            for i in g.ops:
                t = self.targets[i]
                t = dataclasses.replace(t, **{f: dataclasses.replace(v, module=clones[id(v.module)])
                                              for f, v in _views(t)})
                self.results[i] = bool(self.rules[i](self.ops[i], t))
        g.tensors = {o: getattr(clones[mid], k).detach() for o, (mid, k) in g.names.items()}

    def baked(self, i: int) -> bool:
        return self.results.get(i, False)


#: rows of a source tensor read, cast, checked and written at a time (bytes in the loaded dtype)
CHUNK_BYTES = 64 * 2**20


def _spans(t: torch.Tensor) -> list[tuple[int, int] | None]:
    """Runs of rows of ``t`` of about :data:`CHUNK_BYTES` (None: the whole, for a scalar or an
    empty tensor)."""
    if not t.dim() or t.shape[0] == 0:
        return [None]
    row = max(1, t[0].numel() * t.element_size())
    step = max(1, CHUNK_BYTES // row)
    return [(i, min(i + step, t.shape[0])) for i in range(0, t.shape[0], step)]


def live_parts(t: torch.Tensor):
    """The loaded tensor ``t`` in runs of rows on the CPU (views, when it is there already)."""
    for span in _spans(t):
        yield (t if span is None else t[span[0]:span[1]]).detach().to("cpu")


def source_parts(plan: Plan, name: str):
    """``name`` from its source file in the loaded dtype, in runs of rows of about
    :data:`CHUNK_BYTES`. The file is opened for this one tensor: its mapped pages leave the
    process when it closes."""
    from safetensors import safe_open
    live = plan.live[name]
    shape = plan.infos[name].shape
    with safe_open(str(plan.where[name]), framework="pt") as f:
        sl = f.get_slice(name)
        for span in ([None] if not shape or shape[0] == 0 else _spans(live)):
            yield (f.get_tensor(name) if span is None else sl[span[0]:span[1]]).to(live.dtype)


def read_source(plan: Plan, name: str) -> torch.Tensor:
    """The whole of ``name`` from its source file in the loaded dtype (unchecked)."""
    parts = list(source_parts(plan, name))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def write_weights(model, plan: Plan, ops: list[EditOp], rules: dict, tmp: Path) -> dict:
    """Write the output's safetensors files (and index) into ``tmp``; return which ops were
    baked ({op index: bool})."""
    baker = Baker(model, plan, ops, rules)
    weight_map: dict[str, str] = {}
    total = 0
    for f in plan.files:
        infos = {o: plan.infos[o] for o in plan.live if plan.where[o] == f}
        if not infos:
            continue
        with ShardWriter(tmp / f.name, infos, {"format": "pt"}) as w:
            for o in w.names:
                if baker.has(o):
                    parts = [baker.tensor(o)]
                elif plan.live[o].device.type == "meta":      # offloaded: from its file
                    parts = source_parts(plan, o)
                else:
                    parts = live_parts(plan.live[o])
                for part in parts:
                    w.write(o, part)
        weight_map.update({o: f.name for o in infos})
        total += sum(i.numel * DTYPE_BYTES[i.dtype] for i in infos.values())
    if plan.sharded:
        index = {"metadata": {"total_parameters": model.hf.num_parameters(), "total_size": total},
                 "weight_map": weight_map}
        (tmp / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return {i: baker.baked(i) for i in range(len(ops))}


def write_config(model, tmp: Path) -> None:
    """config.json, generation_config.json and the tokenizer, as ``save_pretrained`` writes them
    (on a copy of the config: the loaded model's stays as it is)."""
    hf = model.hf
    cfg = copy.deepcopy(hf.config)
    cfg.dtype = str(hf.dtype).split(".")[1]
    cfg.architectures = [type(hf).__name__.removeprefix("FSDP")]
    cfg.save_pretrained(tmp)
    if hf.can_generate():
        hf.generation_config.save_pretrained(tmp)
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save_pretrained(tmp)
