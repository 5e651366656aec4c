"""``neurolens eval``: skill metrics on the demo prompt formats, optionally before/after edits
(a spiking network: accuracy overall and per class on a sample file, by default its folder's
held-out split)."""

from __future__ import annotations

from neurolens.cli.args import model_args, sample_args
from neurolens.cli.common import load_edits, load_model, model_inputs, self_rendering
from neurolens.cli.output import Progress, emit
from neurolens.errors import InputError


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
    from neurolens.evals import skills as sk
    lm = load_model(args)
    edits = load_edits(lm, args.edits)
    if self_rendering(lm):
        return _eval_generic(args, lm, edits)
    if args.samples:
        raise InputError("--samples is for spiking networks (this model is evaluated on its "
                         "skills' prompt sets)")
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


def _eval_generic(args, model, edits) -> int:
    """A family whose results render themselves: its run on the inputs (by default the model's
    own held-out samples), before / after the edits."""
    default = getattr(model, "default_samples", lambda: None)()
    inputs = model_inputs(args, model, None, default=default)
    where = str(args.samples or default)
    head = {"model": model.name_or_path, "samples": where, "n": len(inputs)}
    if edits is None:
        out = model.classify(inputs)
        emit(args, {**head, **out.to_json()},
             f"{model.name_or_path} on {where}\n" + out.summary(per_sample=False))
    else:
        cmp = model.compare(inputs, edits)
        emit(args, {**head, "edits": args.edits, **cmp.to_json(), "relative": cmp.relative},
             f"{model.name_or_path} on {where}, edits {args.edits}\n" + cmp.summary())
    return 0
