"""The neurolens command line. Errors print one line to stderr (exit 2 for bad input)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neurolens import __version__
from neurolens.errors import InputError, NeurolensError
from neurolens.spec.prompts import read_prompt_rows


# -- helpers ---------------------------------------------------------------------------------------
def read_prompts(path: str, with_answers: bool = False) -> list[str]:
    """The prompts of a prompts file (``read_prompt_rows``). ``with_answers``: each prompt
    followed by its answer where the row has one (``skill_texts``), as Neuron Adjust probes its
    sets and NeuroStrike its benign set."""
    rows = read_prompt_rows(path)
    if not with_answers:
        return [p for p, _ in rows]
    from neurolens.methods.common import skill_texts
    return skill_texts([{"prompt": p, "answer": a} for p, a in rows])


def _prompts(args) -> list[str]:
    if getattr(args, "prompt", None) is not None and getattr(args, "prompts", None):
        raise InputError("give --prompt or --prompts, not both")
    if getattr(args, "prompt", None) is not None:
        return [args.prompt.replace("\\n", "\n")]
    if getattr(args, "prompts", None):
        return read_prompts(args.prompts)
    raise InputError("no prompt: give --prompt TEXT or --prompts FILE")


def _load(args):
    from neurolens.engine.loading import load
    lm = load(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
              trust_remote_code=args.trust_remote_code)
    for n in getattr(lm, "notes", []):
        print(f"note: {n}", file=sys.stderr)
    return lm


def _edits(lm, path: str | None):
    if not path:
        return None
    from neurolens.spec.edits import EditSet
    edits = EditSet.load(path)
    for w in lm.check_edits(edits):
        print(f"warning: {w}", file=sys.stderr)
    return edits


def _emit(args, payload, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2))
    else:
        print(text)


# -- commands --------------------------------------------------------------------------------------
def _info_diffusion(args, dm) -> int:
    sites, alias = dm.sites(), dm.aliases()
    payload = {"name_or_path": dm.name_or_path, "kind": dm.kind, "model_type": dm.model_type,
               "n_layers": dm.n_layers, "n_params": dm.n_params(), "fingerprint": dm.fingerprint,
               "device": str(dm.device), "image_size": dm.image_size, "sites": sites,
               "aliases": alias, "notes": dm.notes, "base_edits": len(dm.base_edits)}
    lines = [f"{dm.name_or_path}", f"  pipeline      {dm.model_type} (diffusion)",
             f"  image size    {dm.image_size}x{dm.image_size}",
             f"  UNet params   {dm.n_params() / 1e6:.2f}M",
             f"  fingerprint   {dm.fingerprint}", f"  device        {dm.device}",
             "  sites (UNet transformer-block FFNs, input of ff.net.2):"]
    lines += [f"    {alias[s]:12s} {s}  width {w}" for s, w in sites.items()]
    lines += [f"  note: {n}" for n in dm.notes]
    _emit(args, payload, "\n".join(lines))
    return 0


def _is_diffusion(model) -> bool:
    return getattr(model, "kind", "") == "diffusion"


def _save_grid(rows: list, path: str) -> str:
    """Save image rows (each a list of [H, W, C] arrays in 0..1) as one PNG grid."""
    from PIL import Image

    from neurolens.engine.diffusion import image_grid

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError(f"--image must end in .png, got {path}")
    if p.parent and not p.parent.exists():
        raise InputError(f"folder {p.parent} does not exist")
    h, w = rows[0][0].shape[:2]
    grid = image_grid(rows)
    scale = max(1, 256 // max(h, w))
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(p)
    return str(p)


def cmd_info(args) -> int:
    lm = _load(args)
    if _is_diffusion(lm):
        return _info_diffusion(args, lm)
    sites = lm.sites()
    payload = {"name_or_path": lm.name_or_path, "kind": lm.kind, "model_type": lm.model_type,
               "n_layers": lm.n_layers, "n_params": lm.n_params(), "fingerprint": lm.fingerprint,
               "device": str(lm.device), "sites": sites, "notes": lm.notes,
               "base_edits": len(lm.base_edits)}
    if not sites:
        payload["modules"] = [n for n, _ in lm.hf.named_modules() if n][:400]
    lines = [f"{lm.name_or_path}", f"  architecture  {lm.model_type} ({lm.kind})",
             f"  layers        {lm.n_layers}", f"  parameters    {lm.n_params() / 1e6:.2f}M",
             f"  fingerprint   {lm.fingerprint}", f"  device        {lm.device}"]
    kinds: dict[str, int] = {}
    for s, w in sites.items():
        kinds.setdefault(s.split(".", 2)[2], w)
    if sites:
        lines.append("  sites (per layer, blocks.{l}.<kind>):")
        lines += [f"    {k:22s} width {w}" for k, w in kinds.items()]
    else:
        lines.append("  no canonical sites; native module paths:")
        lines += [f"    {m}:output" for m in payload["modules"][:40]]
    lines += [f"  note: {n}" for n in lm.notes]
    _emit(args, payload, "\n".join(lines))
    return 0


def cmd_capture(args) -> int:
    prompts = _prompts(args)
    lm = _load(args)
    edits = _edits(lm, args.edits)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"--out must end in .safetensors, got {args.out}")
    if out.parent and not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")
    sites = args.site or ["blocks.*.mlp.hook_post"]
    if _is_diffusion(lm):
        return _capture_diffusion(args, lm, prompts, edits, sites, out)
    reduce = args.reduce or "tokens"

    def progress(done, total):
        if not args.quiet and sys.stderr.isatty():
            print(f"\rcapturing {done}/{total} prompts", end="", file=sys.stderr, flush=True)
    cap = lm.capture(prompts, sites, reduce=reduce, edits=edits, batch_size=args.batch_size,
                     out=out, progress=progress)
    if sys.stderr.isatty() and not args.quiet:
        print(file=sys.stderr)
    n_tok = sum(len(t) for t in cap.tokens)
    payload = {"out": str(out), "sites": cap.sites, "prompts": len(prompts), "tokens": n_tok,
               "reduce": reduce, "bytes": out.stat().st_size}
    _emit(args, payload, f"captured {len(cap.sites)} site(s) x {len(prompts)} prompt(s) "
          f"({n_tok} tokens, reduce={reduce}) -> {out} "
          f"({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _capture_diffusion(args, dm, prompts, edits, sites, out: Path) -> int:
    """One tensor per (site, prompt): ``[steps, width]`` (mean/max over spatial tokens of the
    conditional half) or ``[steps, tokens, width]``."""
    reduce = args.reduce or "mean"
    if reduce == "last":
        raise InputError("--reduce last has no meaning for a diffusion UNet (use mean, max or "
                         "tokens)")
    cap = dm.capture(prompts, sites, reduce=reduce, edits=edits, steps=args.steps,
                     guidance=args.guidance, seed=args.seed)
    cap.save(out)
    payload = {"out": str(out), "sites": cap.sites, "prompts": len(prompts),
               "steps": args.steps, "reduce": reduce, "bytes": out.stat().st_size}
    _emit(args, payload, f"captured {len(cap.sites)} UNet FFN site(s) x {len(prompts)} "
          f"prompt(s) x {args.steps} steps (reduce={reduce}) -> {out} "
          f"({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _generation(args):
    """The run flags as data (``GenerationParams``), checked."""
    from neurolens.spec.run import GenerationParams
    if args.max_new_tokens < 0:
        raise InputError("--max-new-tokens must be >= 0")
    return GenerationParams(max_new_tokens=args.max_new_tokens, seed=args.seed,
                            do_sample=args.sample, temperature=args.temperature,
                            stop=tuple(s.replace("\\n", "\n") for s in (args.stop or []))
                            ).check()


def _denoising(args) -> dict:
    from neurolens.spec.run import DenoiseParams
    return DenoiseParams(steps=args.steps, guidance=args.guidance, seed=args.seed
                         ).check().to_json()


def cmd_run(args) -> int:
    prompts = _prompts(args)
    lm = _load(args)
    edits = _edits(lm, args.edits)
    if _is_diffusion(lm):
        out = lm.generate(prompts, edits=edits, **_denoising(args))
        path = _save_grid([list(out.images)], args.image)
        _emit(args, {**out.to_json(), "image": path},
              f"{len(prompts)} image(s), {args.steps} steps, seeds {out.seeds} -> {path}")
        return 0
    outs = lm.generate(prompts, edits=edits, params=_generation(args))
    if args.json:
        payload = [o.to_json() for o in outs]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for o in outs:
            print(o.prompt + o.text)
    return 0


def cmd_compare(args) -> int:
    prompts = _prompts(args)
    lm = _load(args)
    edits = _edits(lm, args.edits)
    if _is_diffusion(lm):
        c = lm.compare(prompts, edits, **_denoising(args))
        diff = c.diff / max(float(c.diff.max()), 1e-8)
        path = _save_grid([list(c.before), list(c.after), list(diff)], args.image)
        payload = {"prompts": prompts, "seeds": c.seeds, "mean_abs_diff": c.mean_abs_diff(),
                   "image": path}
        _emit(args, payload, "\n".join(
            [f"{p!r}: mean |edited - baseline| {d:.4f}" for p, d in
             zip(prompts, c.mean_abs_diff())] + [f"grid (baseline / edited / difference) -> "
                                                  f"{path}"]))
        return 0
    cmp = lm.compare(prompts, edits, params=_generation(args))
    if args.json:
        print(json.dumps(cmp.to_json(), indent=2))
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


def cmd_export(args) -> int:
    lm = _load(args)
    edits = _edits(lm, args.edits)
    report = lm.export(edits, args.out, force=args.force)
    _emit(args, {"out": str(report.path), "baked": report.baked, "sidecar": report.sidecar},
          report.summary())
    return 0


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        w = 30
        k = int(w * done / max(total, 1))
        print(f"\r{label:14s} [{'#' * k}{'.' * (w - k)}] {done}/{total}", end="",
              file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)


def cmd_reproduce(args) -> int:
    log = (lambda m: print(m, file=sys.stderr)) if not args.quiet else (lambda m: None)
    if args.experiment == "memorization":
        from neurolens.evals import memorization as mem
        from neurolens.resources import DEMO_DIFFUSION, model_path
        if args.model is None:
            if not model_path(DEMO_DIFFUSION).is_dir():
                raise InputError("the diffusion demo model is missing at "
                                 f"{model_path(DEMO_DIFFUSION)}; train it with "
                                 "`python training/train_diffusion.py` in a source checkout")
            args.model = str(model_path(DEMO_DIFFUSION))
        dm = _load(args)
        if not _is_diffusion(dm):
            raise InputError("the memorization experiment needs a diffusion pipeline (-m)")
        pdir = Path(args.prompts_dir) if args.prompts_dir else None
        result = mem.reproduce(dm, log=log, prompts_dir=pdir)
        images = result.pop("_images")
        if args.image:
            from neurolens.evals.data import digits_16
            from neurolens.evals.memorization import (MEMORIZED_SEEDS, ORDINARY_SEEDS,
                                                      load_sets)
            train, _ = digits_16()
            mem_rows, _ = load_sets(pdir)
            k, n = len(MEMORIZED_SEEDS), ORDINARY_SEEDS   # the first seed of each prompt
            rows = [[train[r["image_index"]][..., None] for r in mem_rows],
                    list(images["memorized_before"][::k]),
                    list(images["memorized_after"][::k]),
                    list(images["before"][::n]), list(images["after"][::n])]
            result["image"] = _save_grid(rows, args.image)
            result["image_rows"] = ["memorized training images", "memorized prompts before",
                                    "memorized prompts after", "ordinary digits 0-9 before",
                                    "ordinary digits 0-9 after"]
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(mem.format_table(result))
        return 0
    from neurolens.evals import reproduce as rp
    lm = _load(args)
    result = rp.EXPERIMENTS[args.experiment](lm, limit=args.limit, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(rp.format_table(result))
    return 0


def _texts_said(with_answers: set, role: str) -> str:
    return "prompt + answer where a JSONL row has one" if role in with_answers else "prompts"


def cmd_fit(args) -> int:
    """Fit a registered method on prompt files and write its edits (``neurolens.edits/1``)."""
    from neurolens.methods import registry
    spec = registry.get(args.method)
    with_answers = set(spec.answered_roles) if not args.prompts_only else set()
    given = {r.name: getattr(args, r.name, None) for r in spec.roles}
    values = {f.name: getattr(args, f.name) for f in spec.param_fields()
              if getattr(args, f.name, None) is not None}
    params = spec.make_params(values)
    for r in spec.roles:
        if r.needed(params) and not given[r.name]:
            raise InputError(f"{spec.id} needs --{r.name} FILE")
    for r in spec.roles:   # the same file may not stand on both sides
        other = spec.role(r.differs_from) if r.differs_from else None
        if other is None or not given[r.name] or not given[other.name]:
            continue
        mine = [Path(f).resolve() for f in _files(given[r.name])]
        for f in _files(given[other.name]):
            if Path(f).resolve() in mine:
                raise InputError(f"--{other.name} {f} is among the --{r.name} files: "
                                 f"{spec.title} needs them apart")
    model = _load(args)
    sets = {name: [t for path in _files(files) for t in read_prompts(path, name in with_answers)]
            for name, files in given.items() if files}
    res = spec.run(model, sets, params)
    report = res.report.to_json()
    if spec.answered_roles:
        said = {r.name: _texts_said(with_answers, r.name) for r in spec.roles}
        # one line when the method probes all its sets alike, else one per role
        same = len(spec.answered_roles) == len(spec.roles)
        report["texts"] = next(iter(said.values())) if same else said
    path = res.edits.save(args.out)
    payload = {"method": spec.id, "edits": str(path), "n_ops": len(res.edits), "report": report}
    _emit(args, payload, f"{spec.id}: {len(res.edits)} edit(s) -> {path}\n"
          + json.dumps({k: v for k, v in report.items()
                        if k not in ("top", "layer_choice", "per_site")}))
    return 0


def _files(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def cmd_bench(args) -> int:
    from neurolens import bench
    log = (lambda m: print(m, file=sys.stderr)) if not args.quiet else (lambda m: None)
    result = bench.run(quick=args.quick, only=args.only, log=log, model=args.model)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(bench.table(result))
        for k, v in result["errors"].items():
            print(f"{k}: failed: {v}")
    return 0 if not result["errors"] else 1


def cmd_gui(args) -> int:
    from neurolens.gui.process import configure
    configure()   # before torch loads (see its docstring)
    try:
        from neurolens.gui.app import run_gui
    except ImportError as e:
        raise InputError(f"the GUI needs PySide6 and pyqtgraph ({e})") from None
    return run_gui(args.model, screenshot=args.screenshot, prompt=args.prompt,
                   timeout=args.timeout)


def cmd_eval(args) -> int:
    from neurolens.evals import skills as sk
    lm = _load(args)
    edits = _edits(lm, args.edits)
    prog = _Progress(not args.quiet)
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
    _emit(args, payload, "\n".join(lines))
    return 0


def fit_parser(sub, model_args) -> None:
    """``neurolens fit METHOD``: the methods, their prompt-set flags and their parameters come
    from the method registry (one flag per name, shared by the methods that use it)."""
    from neurolens.methods import registry
    methods = registry.all_methods()
    lines = [f"  {m.id:14s} {m.title} ({', '.join(m.kinds)}): {m.summary}" for m in methods]
    p = sub.add_parser("fit", help="fit a paper method on prompt files, write its edits",
                       description="methods:\n" + "\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    model_args(p)
    p.add_argument("method", choices=[m.id for m in methods])
    p.add_argument("--out", required=True, help="edits file to write (neurolens.edits/1 JSON)")
    seen: dict[str, list[str]] = {}
    for m in methods:
        for r in m.roles:
            seen.setdefault(f"role:{r.name}", []).append(m.id)
        for f in m.param_fields():
            seen.setdefault(f"param:{f.name}", []).append(m.id)
    done: set[str] = set()
    for m in methods:
        for r in m.roles:
            if r.name in done:
                continue
            done.add(r.name)
            who = ", ".join(seen[f"role:{r.name}"])
            kw = {"nargs": "+", "action": "extend"} if r.many else {}
            p.add_argument(f"--{r.name}", metavar="FILE", help=f"{who}: {r.help}", **kw)
    answered = [m.id for m in methods if m.answered_roles]
    p.add_argument("--prompts-only", action="store_true",
                   help=f"{', '.join(answered)}: probe the JSONL prompts without their answers "
                        "(by default each row's answer follows its prompt in the sets these "
                        "methods probe with answers)")
    for m in methods:
        for f in m.param_fields():
            if f.name in done:
                continue
            done.add(f.name)
            who = ", ".join(seen[f"param:{f.name}"])
            kind = type(f.default) if f.default is not None else str
            kw = {"type": kind} if kind in (int, float) else {}
            if f.metadata.get("choices"):
                kw["choices"] = list(f.metadata["choices"])
            p.add_argument(f"--{f.name.replace('_', '-')}", default=None,
                           help=f"{who}: {f.metadata.get('help', '')}", **kw)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fit)


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="neurolens", description="Neuron-level interpretability "
                                 "and editing of neural networks. No command: open the GUI.")
    ap.add_argument("--version", action="version", version=f"neurolens {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def model_args(p):
        p.add_argument("-m", "--model", default=None,
                       help="model folder or hub id (default: the shipped demo model)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
        p.add_argument("--dtype", default=None, help="float32, float16, bfloat16 or auto")
        p.add_argument("--allow-pickle", action="store_true",
                       help="allow pickle weights (.bin/.pt); they can run code")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="run model code shipped with the checkpoint")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks")

    def prompt_args(p, required=True):
        p.add_argument("--prompt", help="prompt text (\\n for a newline)")
        p.add_argument("--prompts", help="file: text lines or JSONL with a 'prompt' field")

    def gen_args(p):
        p.add_argument("--max-new-tokens", type=int, default=32)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--sample", action="store_true", help="sample instead of greedy")
        p.add_argument("--temperature", type=float, default=1.0)
        p.add_argument("--stop", action="append", help="stop text (repeatable), e.g. '\\n'")
        p.add_argument("--steps", type=int, default=20, help="diffusion: denoising steps")
        p.add_argument("--guidance", type=float, default=3.0,
                       help="diffusion: classifier-free guidance scale")
        p.add_argument("--image", default="neurolens_images.png",
                       help="diffusion: where to save the image grid (PNG)")

    p = sub.add_parser("info", help="architecture, sites, widths")
    model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("capture", help="record activations to a safetensors file")
    model_args(p)
    prompt_args(p)
    p.add_argument("--site", action="append", help="site or pattern (repeatable; default "
                   "blocks.*.mlp.hook_post)")
    p.add_argument("--reduce", default=None, choices=["tokens", "last", "mean", "max"],
                   help="LM: per token (default), last token, mean or max over tokens; "
                        "diffusion: mean (default) / max over spatial tokens per step, or "
                        "tokens")
    p.add_argument("--steps", type=int, default=20, help="diffusion: denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="diffusion: guidance scale")
    p.add_argument("--seed", type=int, default=0, help="diffusion: seed of the first prompt")
    p.add_argument("--edits", help="edit spec applied while capturing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True, help="FILE.safetensors")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("run", help="generate text, optionally with edits")
    model_args(p)
    prompt_args(p)
    p.add_argument("--edits", help="edit spec (neurolens.edits/1 JSON)")
    gen_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="baseline vs edited outputs")
    model_args(p)
    prompt_args(p)
    p.add_argument("--edits", required=True)
    gen_args(p)
    p.set_defaults(max_new_tokens=16)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="write the edited checkpoint")
    model_args(p)
    p.add_argument("--edits", required=True)
    p.add_argument("--out", required=True, help="target folder")
    p.add_argument("--force", action="store_true", help="replace a non-empty target folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reproduce", help="run a paper's protocol on the demo model")
    model_args(p)
    p.add_argument("experiment", choices=["unlearning", "neurostrike", "sparsity",
                                          "memorization"])
    p.add_argument("--limit", type=int, default=None, help="at most N eval items per skill")
    p.add_argument("--image", default=None,
                   help="memorization: save a before/after grid of ordinary generations (PNG)")
    p.add_argument("--prompts-dir", default=None,
                   help="memorization: folder with diffusion_memorized.jsonl and "
                        "diffusion_ordinary.jsonl (default: the shipped prompt sets)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    fit_parser(sub, model_args)

    p = sub.add_parser("bench", help="performance benchmarks (ratios measured side by side)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes (keeps the code working)")
    p.add_argument("-m", "--model", default=None,
                   help="model for the demo-model cases (default: the shipped demo model)")
    p.add_argument("--only", action="append", help="run only cases whose key contains this")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("gui", help="open the desktop app (default command)")
    p.add_argument("-m", "--model", default=None, help="model folder or hub id")
    p.add_argument("--screenshot", help="load, run, save the window as PNG, exit")
    p.add_argument("--prompt", help="prompt to run")
    p.add_argument("--timeout", type=float, default=300.0, help="screenshot mode time limit (s)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_gui)

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
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if not argv:
        argv = ["gui"] if "gui" in ap._subparsers._group_actions[0].choices else ["--help"]
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # argparse: exit 2 on bad usage, 0 on --help
        return int(e.code or 0)
    if not getattr(args, "command", None):
        ap.print_help()
        return 0
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except NeurolensError as e:
        if debug:
            raise
        print(f"neurolens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("neurolens: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, traceback with --debug
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"neurolens: error: {type(e).__name__}: {first} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
