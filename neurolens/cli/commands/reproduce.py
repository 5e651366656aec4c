"""``neurolens reproduce``: run a paper's protocol on the demo model (``neurolens.evals``)."""

from __future__ import annotations

from pathlib import Path

from neurolens.cli.args import model_args
from neurolens.cli.common import load_model
from neurolens.cli.output import print_json, save_grid, stderr_log
from neurolens.errors import InputError
from neurolens.evals import experiments


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper's protocol on the demo model")
    model_args(p)
    p.add_argument("experiment", choices=experiments.names())
    p.add_argument("--limit", type=int, default=None, help="at most N eval items per skill")
    p.add_argument("--image", default=None,
                   help="memorization: save a before/after grid of ordinary generations (PNG)")
    p.add_argument("--prompts-dir", default=None,
                   help="memorization: folder with diffusion_memorized.jsonl and "
                        "diffusion_ordinary.jsonl (default: the shipped prompt sets)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    log = stderr_log(args.quiet)
    exp = experiments.get(args.experiment)
    if args.model is None and exp.default_model is not None:
        path = exp.default_model()
        if not path.is_dir():
            raise InputError(f"the {args.experiment} experiment's model is missing at {path}"
                             + (f"; {exp.missing_hint}" if exp.missing_hint else ""))
        args.model = str(path)
    model = load_model(args)
    if model.kind != exp.kind:
        from neurolens.spec.kinds import KIND_WORDS
        raise InputError(f"the {args.experiment} experiment needs a "
                         f"{KIND_WORDS.get(exp.kind, exp.kind)} (-m), not a "
                         f"{KIND_WORDS.get(model.kind, model.kind)}")
    pdir = Path(args.prompts_dir) if args.prompts_dir else None
    result = exp.run(model, limit=args.limit, log=log, prompts_dir=pdir)
    if args.image:
        if exp.image_rows is None:
            raise InputError(f"--image: the {args.experiment} experiment makes no images")
        rows, labels = exp.image_rows(result, pdir)
        result["image"] = save_grid(rows, args.image)
        result["image_rows"] = labels
    result = {k: v for k, v in result.items() if not k.startswith("_")}
    if args.json:
        print_json(result)
    else:
        print(exp.format_table(result))
    return 0
