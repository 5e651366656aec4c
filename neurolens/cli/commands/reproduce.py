"""``neurolens reproduce``: run a paper's protocol on the demo model (``neurolens.evals``)."""

from __future__ import annotations

from pathlib import Path

from neurolens.cli.args import model_args
from neurolens.cli.common import is_diffusion, load_model
from neurolens.cli.output import print_json, save_grid, stderr_log
from neurolens.errors import InputError

#: the language-model protocols are ``neurolens.evals.reproduce.EXPERIMENTS``; memorization
#: (a diffusion pipeline) is ``neurolens.evals.memorization``
EXPERIMENTS = ["unlearning", "neurostrike", "sparsity", "memorization"]


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run a paper's protocol on the demo model")
    model_args(p)
    p.add_argument("experiment", choices=EXPERIMENTS)
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
    if args.experiment == "memorization":
        return _memorization(args, log)
    from neurolens.evals import reproduce as rp
    lm = load_model(args)
    result = rp.EXPERIMENTS[args.experiment](lm, limit=args.limit, log=log)
    if args.json:
        print_json(result)
    else:
        print(rp.format_table(result))
    return 0


def _memorization(args, log) -> int:
    """The memorization protocol on a diffusion pipeline (default: the diffusion demo model)."""
    from neurolens.evals import memorization as mem
    from neurolens.resources import DEMO_DIFFUSION, model_path
    if args.model is None:
        if not model_path(DEMO_DIFFUSION).is_dir():
            raise InputError("the diffusion demo model is missing at "
                             f"{model_path(DEMO_DIFFUSION)}; train it with "
                             "`python training/train_diffusion.py` in a source checkout")
        args.model = str(model_path(DEMO_DIFFUSION))
    dm = load_model(args)
    if not is_diffusion(dm):
        raise InputError("the memorization experiment needs a diffusion pipeline (-m)")
    pdir = Path(args.prompts_dir) if args.prompts_dir else None
    result = mem.reproduce(dm, log=log, prompts_dir=pdir)
    images = result.pop("_images")
    if args.image:
        result["image"] = save_grid(_memorization_rows(images, pdir), args.image)
        result["image_rows"] = ["memorized training images", "memorized prompts before",
                                "memorized prompts after", "ordinary digits 0-9 before",
                                "ordinary digits 0-9 after"]
    if args.json:
        print_json(result)
    else:
        print(mem.format_table(result))
    return 0


def _memorization_rows(images: dict, prompts_dir) -> list[list]:
    """The grid of ``--image``: the memorized training images, the memorized prompts' first
    generations before and after, one ordinary generation per digit before and after."""
    from neurolens.evals.data import digits_16
    from neurolens.evals.memorization import MEMORIZED_SEEDS, ORDINARY_SEEDS, load_sets
    train, _ = digits_16()
    mem_rows, _ = load_sets(prompts_dir)
    k, n = len(MEMORIZED_SEEDS), ORDINARY_SEEDS   # the first seed of each prompt
    return [[train[r["image_index"]][..., None] for r in mem_rows],
            list(images["memorized_before"][::k]), list(images["memorized_after"][::k]),
            list(images["before"][::n]), list(images["after"][::n])]
