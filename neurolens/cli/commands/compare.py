"""``neurolens compare``: baseline vs edited outputs (or images) of the same prompts."""

from __future__ import annotations

from neurolens.cli.args import gen_args, model_args, prompt_args, sample_args
from neurolens.cli.common import (denoise_params, early_prompts, generation_params, is_diffusion,
                                  load_edits, load_model, model_inputs, self_rendering)
from neurolens.cli.output import emit, print_json, render, save_grid


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
    if self_rendering(model):
        render(args, model.compare(prompts, edits))
        return 0
    if is_diffusion(model):
        return _compare_diffusion(args, model, prompts, edits)
    cmp = model.compare(prompts, edits, params=generation_params(args))
    if args.json:
        print_json(cmp.to_json())
        return 0
    for c in cmp.items:
        div = "same" if c.first_divergence is None else f"diverges at token {c.first_divergence}"
        print(f"prompt:   {c.prompt!r}")
        print(f"baseline: {c.baseline.text!r}")
        print(f"edited:   {c.edited.text!r}")
        print(f"          {div}; mean KL(baseline||edited) {c.mean_kl:.4f}")
        print()
    print(f"{cmp.n_changed}/{len(cmp)} outputs changed; mean KL {cmp.mean_kl:.4f}")
    return 0


def _compare_diffusion(args, dm, prompts, edits) -> int:
    c = dm.compare(prompts, edits, **denoise_params(args))
    diff = c.diff / max(float(c.diff.max()), 1e-8)
    path = save_grid([list(c.before), list(c.after), list(diff)], args.image)
    payload = {"prompts": prompts, "seeds": c.seeds, "mean_abs_diff": c.mean_abs_diff(),
               "image": path}
    emit(args, payload, "\n".join(
        [f"{p!r}: mean |edited - baseline| {d:.4f}" for p, d in
         zip(prompts, c.mean_abs_diff())]
        + [f"grid (baseline / edited / difference) -> {path}"]))
    return 0
