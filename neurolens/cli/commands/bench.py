"""``neurolens bench``: the performance benchmarks (``neurolens.bench``)."""

from __future__ import annotations

from neurolens.cli.args import debug_arg
from neurolens.cli.output import print_json, stderr_log


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="performance benchmarks (ratios measured side by side)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes (keeps the code working)")
    p.add_argument("-m", "--model", default=None,
                   help="model for the demo-model cases (default: the shipped demo model)")
    p.add_argument("--only", action="append", help="run only cases whose key contains this")
    p.add_argument("--big", nargs="?", const="3b", choices=["1b", "3b"],
                   help="only the big-model case (not in CI): Llama-3.2-3B-shaped (or 1B) random "
                        "bf16 weights made in a temporary folder; memory and time of load, run, "
                        "capture, export and the GUI against plain transformers")
    p.add_argument("--quiet", action="store_true")
    debug_arg(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    import neurolens.bench as nb
    if args.big:
        from neurolens.bench.cases import big
        result = big.run(args.big, log=stderr_log(args.quiet))
    else:
        result = nb.run(quick=args.quick, only=args.only, log=stderr_log(args.quiet),
                        model=args.model)
    if args.json:
        print_json(result)
    else:
        print(nb.table(result))
        for k, v in result["errors"].items():
            print(f"{k}: failed: {v}")
    return 0 if not result["errors"] else 1
