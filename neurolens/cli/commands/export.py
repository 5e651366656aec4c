"""``neurolens export``: write the edited checkpoint (exact edits baked, the rest a sidecar)."""

from __future__ import annotations

from neurolens.cli.args import model_args
from neurolens.cli.common import load_edits, load_model
from neurolens.cli.output import emit
from neurolens.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write the edited checkpoint")
    model_args(p)
    p.add_argument("--edits", required=True)
    p.add_argument("--out", required=True, help="target folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty target folder")
    p.add_argument("--npz", default=None,
                   help="spiking networks: also write a portable FILE.npz (numpy arrays, no "
                        "pickle; docs/snn.md has its numpy forward)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    model = load_model(args)
    edits = load_edits(model, args.edits)
    if args.npz and not hasattr(model, "export_npz"):
        raise InputError(f"--npz: a {model.kind} model has no portable .npz export")
    report = model.export(edits, args.out, force=args.force)
    payload = {"out": str(report.path), "baked": report.baked, "sidecar": report.sidecar}
    text = report.summary()
    if args.npz:
        payload["npz"] = str(model.export_npz(edits, args.npz, force=args.force))
        text += (f"\nportable arrays -> {payload['npz']} (numpy only: "
                 "neurolens.engine.snn.reference)")
    emit(args, payload, text)
    return 0
