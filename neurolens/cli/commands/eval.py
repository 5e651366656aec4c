"""``neurolens eval``: skill metrics on the demo prompt formats, optionally before/after edits."""

from __future__ import annotations

from neurolens.cli.args import model_args
from neurolens.cli.common import load_edits, load_model
from neurolens.cli.output import Progress, emit


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="skill metrics (demo prompt formats)")
    model_args(p)
    p.add_argument("--edits", help="also evaluate with these edits, relative to unedited")
    p.add_argument("--skill", action="append",
                   help="arithmetic, comprehension, code, refusal, benign (default: all)")
    p.add_argument("--split", default="eval", help="prompt-set split (default: eval, held out)")
    p.add_argument("--limit", type=int, default=None, help="at most N items per skill")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from neurolens.evals import skills as sk
    lm = load_model(args)
    edits = load_edits(lm, args.edits)
    prog = Progress(not args.quiet)
    base = sk.evaluate(lm, args.skill, split=args.split, limit=args.limit,
                       batch_size=args.batch_size, progress=prog)
    payload = {"model": lm.name_or_path, "split": args.split,
               "skills": sk.results_json(base)}
    lines = [f"{'skill':14s} {'metric':16s} {'value':>8s}"]
    if edits is None:
        for s, r in base.items():
            extra = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items()
                              if k != r.primary_name and isinstance(v, float))
            lines.append(f"{s:14s} {r.primary_name:16s} {r.primary:8.3f}"
                         + (f"   ({extra})" if extra else ""))
    else:
        ed = sk.evaluate(lm, args.skill, edits=edits, split=args.split, limit=args.limit,
                         batch_size=args.batch_size, progress=prog)
        rel = sk.relative(base, ed)
        payload = {"model": lm.name_or_path, "split": args.split, "edits": args.edits,
                   "baseline": sk.results_json(base), "edited": sk.results_json(ed),
                   "relative": {k: round(v, 4) for k, v in rel.items()}}
        lines = [f"{'skill':14s} {'metric':16s} {'before':>8s} {'after':>8s} {'relative':>9s}"]
        for s in base:
            lines.append(f"{s:14s} {base[s].primary_name:16s} {base[s].primary:8.3f} "
                         f"{ed[s].primary:8.3f} {rel[s]:9.3f}")
    emit(args, payload, "\n".join(lines))
    return 0
