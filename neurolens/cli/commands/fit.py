"""``neurolens fit METHOD``: fit a registered method on prompt files and write its edits
(``neurolens.edits/1``). The methods, their prompt-set flags and their parameters come from the
method registry (``neurolens.methods.registry``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from neurolens.cli.args import model_args
from neurolens.cli.common import files, load_model, read_prompts
from neurolens.cli.output import emit
from neurolens.errors import InputError


def add_parser(sub) -> None:
    fit_parser(sub, model_args)


def fit_parser(sub, model_args) -> None:
    """``neurolens fit METHOD``: the methods, their prompt-set flags and their parameters come
    from the method registry (one flag per name, shared by the methods that use it)."""
    from neurolens.methods import registry
    methods = registry.all_methods()
    lines = [f"  {m.id:14s} {m.title} ({', '.join(m.kinds)}): {m.summary}" for m in methods]
    p = sub.add_parser("fit", help="fit a paper method on prompt files, write its edits",
                       description="methods:\n" + "\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(p)
    p.add_argument("method", choices=[m.id for m in methods])
    p.add_argument("--out", required=True, help="edits file to write (neurolens.edits/1 JSON)")
    seen: dict[str, list[str]] = {}
    for m in methods:
        for r in m.roles:
            seen.setdefault(f"role:{r.name}", []).append(m.id)
        for f in m.param_fields():
            seen.setdefault(f"param:{f.name}", []).append(m.id)
    done: set[str] = set()
    for m in methods:
        for r in m.roles:
            if r.name in done:
                continue
            done.add(r.name)
            who = ", ".join(seen[f"role:{r.name}"])
            kw = {"nargs": "+", "action": "extend"} if r.many else {}
            p.add_argument(f"--{r.name}", metavar="FILE", help=f"{who}: {r.help}", **kw)
    answered = [m.id for m in methods if m.answered_roles]
    p.add_argument("--prompts-only", action="store_true",
                   help=f"{', '.join(answered)}: probe the JSONL prompts without their answers "
                        "(by default each row's answer follows its prompt in the sets these "
                        "methods probe with answers)")
    for m in methods:
        for f in m.param_fields():
            if f.name in done:
                continue
            done.add(f.name)
            who = ", ".join(seen[f"param:{f.name}"])
            kind = type(f.default) if f.default is not None else str
            kw = {"type": kind} if kind in (int, float) else {}
            if f.metadata.get("choices"):
                kw["choices"] = list(f.metadata["choices"])
            p.add_argument(f"--{f.name.replace('_', '-')}", default=None,
                           help=f"{who}: {f.metadata.get('help', '')}", **kw)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args) -> int:
    """Fit a registered method on prompt files and write its edits (``neurolens.edits/1``)."""
    from neurolens.methods import registry
    spec = registry.get(args.method)
    with_answers = set(spec.answered_roles) if not args.prompts_only else set()
    given = {r.name: getattr(args, r.name, None) for r in spec.roles}
    values = {f.name: getattr(args, f.name) for f in spec.param_fields()
              if getattr(args, f.name, None) is not None}
    params = spec.make_params(values)
    for r in spec.roles:
        if r.needed(params) and not given[r.name]:
            raise InputError(f"{spec.id} needs --{r.name} FILE")
    for r in spec.roles:   # the same file may not stand on both sides
        other = spec.role(r.differs_from) if r.differs_from else None
        if other is None or not given[r.name] or not given[other.name]:
            continue
        mine = [Path(f).resolve() for f in files(given[r.name])]
        for f in files(given[other.name]):
            if Path(f).resolve() in mine:
                raise InputError(f"--{other.name} {f} is among the --{r.name} files: "
                                 f"{spec.title} needs them apart")
    model = load_model(args)
    sets = {name: [t for path in files(fs) for t in read_prompts(path, name in with_answers)]
            for name, fs in given.items() if fs}
    res = spec.run(model, sets, params)
    report = res.report.to_json()
    if spec.answered_roles:
        said = {r.name: _texts_said(with_answers, r.name) for r in spec.roles}
        # one line when the method probes all its sets alike, else one per role
        same = len(spec.answered_roles) == len(spec.roles)
        report["texts"] = next(iter(said.values())) if same else said
    path = res.edits.save(args.out)
    payload = {"method": spec.id, "edits": str(path), "n_ops": len(res.edits), "report": report}
    emit(args, payload, f"{spec.id}: {len(res.edits)} edit(s) -> {path}\n"
         + json.dumps({k: v for k, v in report.items()
                       if k not in ("top", "layer_choice", "per_site")}))
    return 0


def _texts_said(with_answers: set, role: str) -> str:
    return "prompt + answer where a JSONL row has one" if role in with_answers else "prompts"
