"""``neurolens info``: architecture, sites, widths."""

from __future__ import annotations

from neurolens.cli.args import model_args
from neurolens.cli.common import load_model
from neurolens.cli.families import adapter_for
from neurolens.cli.output import emit


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="architecture, sites, widths")
    model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    model = load_model(args)
    family = adapter_for(model)
    payload = family.info_payload(model)
    emit(args, payload, "\n".join(family.info_lines(model, payload)))
    return 0
