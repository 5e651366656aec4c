"""``neurolens run``: generate text (or images), optionally with edits."""

from __future__ import annotations

from neurolens.cli.args import gen_args, model_args, prompt_args, sample_args
from neurolens.cli.common import early_prompts, load_edits, load_model, model_inputs
from neurolens.cli.families import adapter_for


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate text (or images; a spiking network classifies "
                       "samples), optionally with edits")
    model_args(p)
    prompt_args(p)
    sample_args(p)
    p.add_argument("--edits", help="edit spec (neurolens.edits/1 JSON)")
    gen_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    prompts = early_prompts(args)
    model = load_model(args)
    prompts = model_inputs(args, model, prompts)
    edits = load_edits(model, args.edits)
    return adapter_for(model).run(args, model, prompts, edits)
