"""``neurolens run``: generate text (or images), optionally with edits."""

from __future__ import annotations

from neurolens.cli.args import gen_args, model_args, prompt_args
from neurolens.cli.common import (denoise_params, generation_params, is_diffusion, load_edits,
                                  load_model, prompts_from)
from neurolens.cli.output import emit, print_json, save_grid


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate text, optionally with edits")
    model_args(p)
    prompt_args(p)
    p.add_argument("--edits", help="edit spec (neurolens.edits/1 JSON)")
    gen_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    prompts = prompts_from(args)
    model = load_model(args)
    edits = load_edits(model, args.edits)
    if is_diffusion(model):
        out = model.generate(prompts, edits=edits, **denoise_params(args))
        path = save_grid([list(out.images)], args.image)
        emit(args, {**out.to_json(), "image": path},
             f"{len(prompts)} image(s), {args.steps} steps, seeds {out.seeds} -> {path}")
        return 0
    outs = model.generate(prompts, edits=edits, params=generation_params(args))
    if args.json:
        payload = [o.to_json() for o in outs]
        print_json(payload[0] if len(payload) == 1 else payload)
    else:
        for o in outs:
            print(o.prompt + o.text)
    return 0
