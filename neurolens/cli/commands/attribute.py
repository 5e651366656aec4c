"""``neurolens attribute``: causal neuron scores for an answer (attribution patching, gradient x
activation, or exact activation patching), the top-K as a prune edit set, the effect arrays as a
capture-format file. ``--per head`` scores attention heads of ``blocks.L.attn.hook_z`` sites
(the top-K as ``prune_head`` ops)."""

from __future__ import annotations

import sys
from pathlib import Path

from neurolens.cli.args import model_args, prompt_args
from neurolens.cli.common import load_edits, load_model, read_prompts
from neurolens.cli.output import emit
from neurolens.errors import InputError
from neurolens.spec.prompts import probe_split, read_prompt_rows


def add_parser(sub) -> None:
    p = sub.add_parser("attribute", help="causal neuron scores: which neurons make the answer")
    model_args(p)
    prompt_args(p)
    p.add_argument("--answer", help="the answer the metric scores (default: a prompts file's "
                   "'answer' fields)")
    p.add_argument("--contrast", help="contrast answer: the metric is logit(answer) - "
                   "logit(contrast) where their tokens first differ (default: the answer's "
                   "log-probability)")
    p.add_argument("--corrupt", help="corrupted prompt (same token length as the prompt)")
    p.add_argument("--corrupt-prompts", help="file of corrupted prompts, one per prompt")
    p.add_argument("--ablate", choices=["mean", "zero"],
                   help="no corrupted prompt: mean (default) or zero ablation")
    p.add_argument("--mean-prompts", help="prompts file for the mean ablation (default: the "
                   "probe split of a JSONL prompts file's skill, else the prompts)")
    p.add_argument("--site", action="append", help="neuron site or pattern (repeatable; "
                   "default blocks.*.mlp.hook_post, with --per head blocks.*.attn.hook_z)")
    p.add_argument("--per", default="neuron", choices=["neuron", "head"],
                   help="score neurons (default) or attention heads (hook_z sites; a head is "
                        "its whole d_head slice)")
    p.add_argument("--method", default="attribution", choices=["attribution", "gradxact",
                                                               "exact"])
    p.add_argument("--position", type=int, default=None,
                   help="score one token position (negative: from the end) instead of the sum")
    p.add_argument("--top", type=int, default=20,
                   help="K neurons (heads) to list / write (default 20)")
    p.add_argument("--verify", action="store_true",
                   help="patch the top K exactly too (gradient methods)")
    p.add_argument("--as-edits", help="write a prune edit set of the top K to this JSON file "
                   "(prune_head ops with --per head)")
    p.add_argument("--out", help="write the effect arrays to FILE.safetensors (capture format)")
    p.add_argument("--edits", help="edit spec applied during the runs")
    p.add_argument("--batch-size", type=int, default=64,
                   help="rows per forward of exact patching")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attribute)


def _prompts_and_answers(args) -> tuple[list[str], object]:
    if args.prompt is not None and args.prompts:
        raise InputError("give --prompt or --prompts, not both")
    if args.prompt is not None:
        prompts, answers = [args.prompt.replace("\\n", "\n")], None
    elif args.prompts:
        rows = read_prompt_rows(args.prompts)
        prompts = [p for p, _ in rows]
        answers = [a for _, a in rows] if all(a is not None for _, a in rows) else None
    else:
        raise InputError("no prompt: give --prompt TEXT or --prompts FILE")
    if args.answer is not None:
        return prompts, args.answer.replace("\\n", "\n")
    if answers is None:
        raise InputError("no answer: give --answer TEXT (or a JSONL prompts file with "
                         "'answer' fields)")
    return prompts, answers


def _check_out(path: str | None, suffix: str, flag: str) -> None:
    if not path:
        return
    p = Path(path)
    if p.suffix != suffix:
        raise InputError(f"{flag} must end in {suffix}, got {path}")
    if p.parent and not p.parent.exists():
        raise InputError(f"folder {p.parent} does not exist")


def _mean_prompts(args, corrupt) -> tuple[list[str] | None, str]:
    """The prompts the mean ablation averages over: --mean-prompts, else the probe split of the
    prompts file's skill (its own probe rows, or the shipped skill file's), else the prompts."""
    if args.mean_prompts:
        got = read_prompts(args.mean_prompts)
        return got, f"{Path(args.mean_prompts).name} ({len(got)} prompts)"
    if corrupt is None and args.ablate != "zero" and args.prompts:
        probe = probe_split(args.prompts)
        if probe is not None:
            return probe
    return None, "the attributed prompts"


def cmd_attribute(args) -> int:
    prompts, answer = _prompts_and_answers(args)
    if args.corrupt is not None and args.corrupt_prompts:
        raise InputError("give --corrupt or --corrupt-prompts, not both")
    corrupt = ([args.corrupt.replace("\\n", "\n")] if args.corrupt is not None
               else read_prompts(args.corrupt_prompts) if args.corrupt_prompts else None)
    if corrupt is not None and args.ablate:
        raise InputError("give a corrupted prompt or --ablate, not both")
    if args.top < 1:
        raise InputError("--top must be >= 1")
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    _check_out(args.as_edits, ".json", "--as-edits")
    _check_out(args.out, ".safetensors", "--out")
    mean_prompts, mean_over = _mean_prompts(args, corrupt)
    model = load_model(args)
    if getattr(model, "kind", "lm") != "lm":
        raise InputError("attribute works on language models")
    edits = load_edits(model, args.edits)
    from neurolens.engine.attribution import attribute

    default = "blocks.*.attn.hook_z" if args.per == "head" else "blocks.*.mlp.hook_post"
    res = attribute(model, prompts, answer, args.contrast, corrupt=corrupt, ablate=args.ablate,
                    sites=args.site or [default], method=args.method,
                    position=args.position, mean_prompts=mean_prompts,
                    verify=args.top if args.verify else 0, batch=args.batch_size, edits=edits,
                    per=args.per)
    payload = res.to_json(top=args.top)
    notes = []
    if res.corruption == "mean":
        payload["mean_over"] = mean_over
        notes.append(f"mean ablation over {mean_over}")
    if args.as_edits:
        path = res.as_edits(args.top).save(args.as_edits)
        payload["as_edits"] = str(path)
        notes.append(f"prune edit set of the top {args.top} {res.unit}s -> {path}")
    if args.out:
        path = res.save(args.out)
        payload["out"] = str(path)
        notes.append(f"effect arrays -> {path}")
    emit(args, payload, res.summary(args.top))
    if not args.json:
        for n in notes:
            print(n, file=sys.stderr)
    return 0
