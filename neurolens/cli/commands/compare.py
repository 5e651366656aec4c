"""``neurolens compare``: baseline vs edited outputs (or images) of the same prompts."""

from __future__ import annotations

from neurolens.cli.args import gen_args, model_args, prompt_args, sample_args
from neurolens.cli.common import early_prompts, load_edits, load_model, model_inputs
from neurolens.cli.families import adapter_for


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="baseline vs edited outputs")
    model_args(p)
    prompt_args(p)
    sample_args(p)
    p.add_argument("--edits", required=True)
    gen_args(p)
    p.set_defaults(max_new_tokens=16)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    prompts = early_prompts(args)
    model = load_model(args)
    prompts = model_inputs(args, model, prompts)
    edits = load_edits(model, args.edits)
    return adapter_for(model).compare(args, model, prompts, edits)
