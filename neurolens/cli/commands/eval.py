"""``neurolens eval``: skill metrics on the demo prompt formats, optionally before/after edits
(a spiking network: accuracy overall and per class on a sample file, by default its folder's
held-out split)."""

from __future__ import annotations

from neurolens.cli.args import model_args, sample_args
from neurolens.cli.common import load_edits, load_model
from neurolens.cli.families import adapter_for


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="skill metrics (demo prompt formats)")
    model_args(p)
    p.add_argument("--edits", help="also evaluate with these edits, relative to unedited")
    p.add_argument("--skill", action="append",
                   help="arithmetic, comprehension, code, refusal, benign (default: all)")
    p.add_argument("--split", default="eval", help="prompt-set split (default: eval, held out)")
    p.add_argument("--limit", type=int, default=None,
                   help="at most N items per skill (spiking networks: the first N samples)")
    sample_args(p, limit=False)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    model = load_model(args)
    edits = load_edits(model, args.edits)
    return adapter_for(model).evaluate(args, model, edits)
