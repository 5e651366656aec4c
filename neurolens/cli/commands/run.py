"""``neurolens run``: generate text (or images), optionally with edits."""

from __future__ import annotations

from neurolens.cli.args import gen_args, model_args, prompt_args, sample_args
from neurolens.cli.common import (denoise_params, early_prompts, generation_params, is_diffusion,
                                  load_edits, load_model, model_inputs, self_rendering)
from neurolens.cli.output import emit, print_json, render, save_grid


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
    if self_rendering(model):
        out = model.generate(prompts, edits=edits)
        render(args, out, out.to_json(per_sample=True))
        return 0
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
