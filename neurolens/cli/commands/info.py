"""``neurolens info``: architecture, sites, widths."""

from __future__ import annotations

from neurolens.cli.args import model_args
from neurolens.cli.common import is_diffusion, load_model, site_pattern
from neurolens.cli.output import emit


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="architecture, sites, widths")
    model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    model = load_model(args)
    if is_diffusion(model):
        return _info_diffusion(args, model)
    sites = model.sites()
    payload = {"name_or_path": model.name_or_path, "kind": model.kind,
               "model_type": model.model_type, "n_layers": model.n_layers,
               "n_params": model.n_params(), "fingerprint": model.fingerprint,
               "device": str(model.device), "sites": sites, "notes": model.notes,
               "base_edits": len(model.base_edits)}
    payload["memory"] = _memory(model)
    if not sites:
        payload["modules"] = [n for n, _ in model.hf.named_modules() if n][:400]
    lines = [f"{model.name_or_path}", f"  architecture  {model.model_type} ({model.kind})",
             f"  layers        {model.n_layers}",
             f"  parameters    {model.n_params() / 1e6:.2f}M",
             f"  fingerprint   {model.fingerprint}", f"  device        {model.device}"]
    if payload["memory"] is not None:
        lines.append(f"  memory        {_memory_line(payload['memory'])}")
    kinds: dict[str, int] = {}
    for s, w in sites.items():
        kinds.setdefault(s.split(".", 2)[2], w)
    if sites:
        lines.append(f"  sites (per layer, {site_pattern(model)}):")
        lines += [f"    {k:22s} width {w}" for k, w in kinds.items()]
    else:
        lines.append("  no canonical sites; native module paths:")
        lines += [f"    {m}:output" for m in payload["modules"][:40]]
    lines += [f"  note: {n}" for n in model.notes]
    emit(args, payload, "\n".join(lines))
    return 0


def _memory(model) -> dict | None:
    """The pre-flight estimate of the model's checkpoint at the dtype it was loaded with."""
    from neurolens.engine.memory import report
    hf = getattr(model, "hf", None)       # transformers models only
    p = next(iter(hf.parameters()), None) if hf is not None else None
    return report(model.name_or_path, p.dtype, str(model.device)) if p is not None else None


def _memory_line(m: dict) -> str:
    from neurolens.engine.memory import gb
    free = m["available_bytes"]
    return (f"{gb(m['weights_bytes'])} of weights at {m['dtype']}, about {gb(m['needed_bytes'])}"
            f" to run" + (f" ({gb(free)} available on {m['device']})" if free is not None else ""))


def _info_diffusion(args, dm) -> int:
    sites, alias = dm.sites(), dm.aliases()
    payload = {"name_or_path": dm.name_or_path, "kind": dm.kind, "model_type": dm.model_type,
               "n_layers": dm.n_layers, "n_params": dm.n_params(), "fingerprint": dm.fingerprint,
               "device": str(dm.device), "image_size": dm.image_size, "sites": sites,
               "aliases": alias, "notes": dm.notes, "base_edits": len(dm.base_edits)}
    lines = [f"{dm.name_or_path}", f"  pipeline      {dm.model_type} (diffusion)",
             f"  image size    {dm.image_size}x{dm.image_size}",
             f"  UNet params   {dm.n_params() / 1e6:.2f}M",
             f"  fingerprint   {dm.fingerprint}", f"  device        {dm.device}",
             "  sites (UNet transformer-block FFNs, input of ff.net.2):"]
    lines += [f"    {alias[s]:12s} {s}  width {w}" for s, w in sites.items()]
    lines += [f"  note: {n}" for n in dm.notes]
    emit(args, payload, "\n".join(lines))
    return 0
