"""What the commands do that differs between model families, chosen by ``model.kind``.

``run``, ``compare``, ``info``, ``capture`` and ``eval`` load the model and its inputs and edits
the same way for every family, then hand over to :func:`adapter_for` ``(model)``: one
:class:`FamilyAdapter` per kind, registered here with :func:`register`. The base class is the
generic path: the model's verbs take only their inputs and edits, and their results render
themselves (``to_json()``, ``summary()``), as a spiking network's do; a kind with no adapter of
its own gets it. Language models and diffusion pipelines keep their own, older renderings.
A new family registers an adapter (here or in its own module) and touches no command.

The engine is imported inside the methods: building the parser loads no torch.
"""

from __future__ import annotations

import sys

from neurolens.cli.common import (denoise_params, generation_params, model_inputs,
                                  site_pattern)
from neurolens.cli.output import Progress, emit, print_json, render, save_grid
from neurolens.errors import InputError

_ADAPTERS: dict[str, type[FamilyAdapter]] = {}


def register(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Make ``cls`` the adapter of the models whose ``kind`` is ``cls.kind`` (a decorator)."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} names no kind")
    _ADAPTERS[cls.kind] = cls
    return cls


def unregister(kind: str) -> None:
    """Forget the adapter of ``kind`` (its models take the generic path again)."""
    _ADAPTERS.pop(kind, None)


def adapter_for(model) -> FamilyAdapter:
    """The adapter of ``model``'s kind, or the generic one for a kind with none."""
    return _ADAPTERS.get(getattr(model, "kind", ""), FamilyAdapter)()


class FamilyAdapter:
    """The generic path: the verbs take the inputs and the edits, the results render
    themselves. Each method gets the parsed flags, the loaded model, its inputs (prompts or
    samples, as :func:`~neurolens.cli.common.model_inputs` read them) and the checked edits
    (or None); ``run``, ``compare`` and ``evaluate`` print and return the exit code."""

    kind = ""

    # -- run / compare ---------------------------------------------------------------------------
    def run(self, args, model, inputs, edits) -> int:
        out = model.generate(inputs, edits=edits)
        render(args, out, out.to_json(per_sample=True))
        return 0

    def compare(self, args, model, inputs, edits) -> int:
        render(args, model.compare(inputs, edits))
        return 0

    # -- eval ------------------------------------------------------------------------------------
    def evaluate(self, args, model, edits) -> int:
        """The model's run on the inputs (by default its own held-out samples), before /
        after the edits."""
        default = getattr(model, "default_samples", lambda: None)()
        inputs = model_inputs(args, model, None, default=default)
        where = str(args.samples or default)
        head = {"model": model.name_or_path, "samples": where, "n": len(inputs)}
        if edits is None:
            out = model.generate(inputs)
            emit(args, {**head, **out.to_json()},
                 f"{model.name_or_path} on {where}\n" + out.summary(per_sample=False))
        else:
            cmp = model.compare(inputs, edits)
            emit(args, {**head, "edits": args.edits, **cmp.to_json(), "relative": cmp.relative},
                 f"{model.name_or_path} on {where}, edits {args.edits}\n" + cmp.summary())
        return 0

    # -- info ------------------------------------------------------------------------------------
    def info_payload(self, model) -> dict:
        """``info --json``: the architecture, the sites and widths, the memory estimate."""
        sites = model.sites()
        payload = {"name_or_path": model.name_or_path, "kind": model.kind,
                   "model_type": model.model_type, "n_layers": model.n_layers,
                   "n_params": model.n_params(), "fingerprint": model.fingerprint,
                   "device": str(model.device), "sites": sites, "notes": model.notes,
                   "base_edits": len(model.base_edits)}
        payload["memory"] = _memory(model)
        if not sites:
            payload["modules"] = [n for n, _ in model.hf.named_modules() if n][:400]
        return payload

    def info_lines(self, model, payload: dict) -> list[str]:
        """``info``: the lines of the payload (site kinds per layer, not every site)."""
        sites = payload["sites"]
        lines = [f"{model.name_or_path}", f"  architecture  {model.model_type} ({model.kind})",
                 f"  layers        {model.n_layers}",
                 f"  parameters    {model.n_params() / 1e6:.2f}M",
                 f"  fingerprint   {model.fingerprint}", f"  device        {model.device}"]
        if payload["memory"] is not None:
            lines.append(f"  memory        {_memory_line(payload['memory'])}")
        kinds: dict[str, int] = {}
        for s, w in sites.items():
            kinds.setdefault(s.split(".", 2)[2], w)
        if sites:
            lines.append(f"  sites (per layer, {site_pattern(model)}):")
            lines += [f"    {k:22s} width {w}" for k, w in kinds.items()]
        else:
            lines.append("  no canonical sites; native module paths:")
            lines += [f"    {m}:output" for m in payload["modules"][:40]]
        lines += [f"  note: {n}" for n in model.notes]
        return lines

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, args, model, inputs, sites: list[str], edits, out) -> tuple[dict, str]:
        """Record ``sites`` on ``inputs`` into the safetensors file ``out`` (rows streamed:
        bounded memory); the payload and text of the command."""
        # the model's words for its inputs and their positions (a spiking network: samples, bins)
        nouns, positions = getattr(model, "input_nouns", ("prompts", "tokens"))
        reduce = args.reduce or "tokens"
        show = not args.quiet and sys.stderr.isatty()

        def progress(done, total):
            if show:
                print(f"\rcapturing {done}/{total} {nouns}", end="", file=sys.stderr,
                      flush=True)
        cap = model.capture(inputs, sites, reduce=reduce, edits=edits,
                            batch_size=args.batch_size, out=out, progress=progress)
        if show:
            print(file=sys.stderr)
        size = _saved_size(cap, out)
        n_tok = sum(len(t) for t in cap.tokens)
        payload = {"out": str(out), "sites": cap.sites, nouns: len(inputs),
                   positions: n_tok, "reduce": reduce, "bytes": size}
        text = (f"captured {len(cap.sites)} site(s) x {len(inputs)} {nouns[:-1]}(s) "
                f"({n_tok} {positions}, reduce={reduce}) -> {out} ({size / 1e6:.1f} MB)")
        return payload, text


@register
class SNNAdapter(FamilyAdapter):
    """Spiking networks: the generic path (samples in, results that render themselves)."""

    kind = "snn"


@register
class LMAdapter(FamilyAdapter):
    """Language models: generated text, token-level comparisons, the skills' prompt sets."""

    kind = "lm"

    def run(self, args, model, inputs, edits) -> int:
        outs = model.generate(inputs, edits=edits, params=generation_params(args))
        if args.json:
            payload = [o.to_json() for o in outs]
            print_json(payload[0] if len(payload) == 1 else payload)
        else:
            for o in outs:
                print(o.prompt + o.text)
        return 0

    def compare(self, args, model, inputs, edits) -> int:
        cmp = model.compare(inputs, edits, params=generation_params(args))
        if args.json:
            print_json(cmp.to_json())
            return 0
        for c in cmp.items:
            div = ("same" if c.first_divergence is None
                   else f"diverges at token {c.first_divergence}")
            print(f"prompt:   {c.prompt!r}")
            print(f"baseline: {c.baseline.text!r}")
            print(f"edited:   {c.edited.text!r}")
            print(f"          {div}; mean KL(baseline||edited) {c.mean_kl:.4f}")
            print()
        print(f"{cmp.n_changed}/{len(cmp)} outputs changed; mean KL {cmp.mean_kl:.4f}")
        return 0

    def evaluate(self, args, model, edits) -> int:
        """The skill metrics on the demo prompt formats, before / after the edits."""
        from neurolens.evals import skills as sk
        if args.samples:
            raise InputError("--samples is for spiking networks (this model is evaluated on its "
                             "skills' prompt sets)")
        prog = Progress(not args.quiet)
        base = sk.evaluate(model, args.skill, split=args.split, limit=args.limit,
                           batch_size=args.batch_size, progress=prog)
        payload = {"model": model.name_or_path, "split": args.split,
                   "skills": sk.results_json(base)}
        lines = [f"{'skill':14s} {'metric':16s} {'value':>8s}"]
        if edits is None:
            for s, r in base.items():
                extra = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items()
                                  if k != r.primary_name and isinstance(v, float))
                lines.append(f"{s:14s} {r.primary_name:16s} {r.primary:8.3f}"
                             + (f"   ({extra})" if extra else ""))
        else:
            ed = sk.evaluate(model, args.skill, edits=edits, split=args.split, limit=args.limit,
                             batch_size=args.batch_size, progress=prog)
            rel = sk.relative(base, ed)
            payload = {"model": model.name_or_path, "split": args.split, "edits": args.edits,
                       "baseline": sk.results_json(base), "edited": sk.results_json(ed),
                       "relative": {k: round(v, 4) for k, v in rel.items()}}
            lines = [f"{'skill':14s} {'metric':16s} {'before':>8s} {'after':>8s} "
                     f"{'relative':>9s}"]
            for s in base:
                lines.append(f"{s:14s} {base[s].primary_name:16s} {base[s].primary:8.3f} "
                             f"{ed[s].primary:8.3f} {rel[s]:9.3f}")
        emit(args, payload, "\n".join(lines))
        return 0


@register
class DiffusionAdapter(FamilyAdapter):
    """Diffusion pipelines: image grids (PNG), per-step UNet captures, the aliases of the
    sites."""

    kind = "diffusion"

    def run(self, args, model, inputs, edits) -> int:
        out = model.generate(inputs, edits=edits, **denoise_params(args))
        path = save_grid([list(out.images)], args.image)
        emit(args, {**out.to_json(), "image": path},
             f"{len(inputs)} image(s), {args.steps} steps, seeds {out.seeds} -> {path}")
        return 0

    def compare(self, args, model, inputs, edits) -> int:
        c = model.compare(inputs, edits, **denoise_params(args))
        diff = c.diff / max(float(c.diff.max()), 1e-8)
        path = save_grid([list(c.before), list(c.after), list(diff)], args.image)
        payload = {"prompts": inputs, "seeds": c.seeds, "mean_abs_diff": c.mean_abs_diff(),
                   "image": path}
        emit(args, payload, "\n".join(
            [f"{p!r}: mean |edited - baseline| {d:.4f}" for p, d in
             zip(inputs, c.mean_abs_diff())]
            + [f"grid (baseline / edited / difference) -> {path}"]))
        return 0

    # a pipeline has no eval of its own yet: the language models' (which it cannot run)
    def evaluate(self, args, model, edits) -> int:
        raise InputError("eval scores the skills of language models and the accuracy of spiking "
                         "networks; for a diffusion pipeline use `neurolens compare` (images "
                         "before / after) or `neurolens reproduce memorization`")

    def info_payload(self, model) -> dict:
        return {"name_or_path": model.name_or_path, "kind": model.kind,
                "model_type": model.model_type, "n_layers": model.n_layers,
                "n_params": model.n_params(), "fingerprint": model.fingerprint,
                "device": str(model.device), "image_size": model.image_size,
                "sites": model.sites(), "aliases": model.aliases(), "notes": model.notes,
                "base_edits": len(model.base_edits)}

    def info_lines(self, model, payload: dict) -> list[str]:
        alias = payload["aliases"]
        lines = [f"{model.name_or_path}", f"  pipeline      {model.model_type} (diffusion)",
                 f"  image size    {model.image_size}x{model.image_size}",
                 f"  UNet params   {model.n_params() / 1e6:.2f}M",
                 f"  fingerprint   {model.fingerprint}", f"  device        {model.device}",
                 "  sites (UNet transformer-block FFNs, input of ff.net.2):"]
        lines += [f"    {alias[s]:12s} {s}  width {w}" for s, w in payload["sites"].items()]
        lines += [f"  note: {n}" for n in model.notes]
        return lines

    def capture(self, args, model, inputs, sites: list[str], edits, out) -> tuple[dict, str]:
        # one tensor per (site, prompt): [steps, width] (mean/max over the spatial tokens of
        # the conditional half) or [steps, tokens, width]
        reduce = args.reduce or "mean"
        if reduce == "last":
            raise InputError("--reduce last has no meaning for a diffusion UNet (use mean, max "
                             "or tokens)")
        cap = model.capture(inputs, sites, reduce=reduce, edits=edits, steps=args.steps,
                            guidance=args.guidance, seed=args.seed)
        size = _saved_size(cap, out)
        payload = {"out": str(out), "sites": cap.sites, "prompts": len(inputs),
                   "steps": args.steps, "reduce": reduce, "bytes": size}
        text = (f"captured {len(cap.sites)} UNet FFN site(s) x {len(inputs)} prompt(s) x "
                f"{args.steps} steps (reduce={reduce}) -> {out} ({size / 1e6:.1f} MB)")
        return payload, text


# ----------------------------------------------------------------------------- helpers
def _saved_size(cap, out) -> int:
    """The size of the capture file, written now if the rows were held in memory."""
    if cap.path is None:
        cap.save(out)
    return out.stat().st_size


def _memory(model) -> dict | None:
    """The pre-flight estimate of the model's checkpoint at the dtype it was loaded with."""
    from neurolens.engine.memory import report
    hf = getattr(model, "hf", None)       # transformers models only
    p = next(iter(hf.parameters()), None) if hf is not None else None
    return report(model.name_or_path, p.dtype, str(model.device)) if p is not None else None


def _memory_line(m: dict) -> str:
    from neurolens.engine.memory import gb
    free = m["available_bytes"]
    return (f"{gb(m['weights_bytes'])} of weights at {m['dtype']}, about {gb(m['needed_bytes'])}"
            f" to run" + (f" ({gb(free)} available on {m['device']})" if free is not None else ""))
