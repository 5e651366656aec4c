"""What the commands share: prompts from the flags, the model and edits to load, run settings
as data. The engine is imported inside the functions (building the parser loads no torch)."""

from __future__ import annotations

import sys

from neurolens.errors import InputError
from neurolens.spec.prompts import read_prompt_rows


def read_prompts(path: str, with_answers: bool = False) -> list[str]:
    """The prompts of a prompts file (``read_prompt_rows``). ``with_answers``: each prompt
    followed by its answer where the row has one (``skill_texts``), as Neuron Adjust probes its
    sets and NeuroStrike its benign set."""
    rows = read_prompt_rows(path)
    if not with_answers:
        return [p for p, _ in rows]
    from neurolens.methods.common import skill_texts
    return skill_texts([{"prompt": p, "answer": a} for p, a in rows])


def prompts_from(args) -> list[str]:
    """``--prompt TEXT`` or ``--prompts FILE`` (one of them)."""
    if getattr(args, "prompt", None) is not None and getattr(args, "prompts", None):
        raise InputError("give --prompt or --prompts, not both")
    if getattr(args, "prompt", None) is not None:
        return [args.prompt.replace("\\n", "\n")]
    if getattr(args, "prompts", None):
        return read_prompts(args.prompts)
    raise InputError("no prompt: give --prompt TEXT or --prompts FILE")


def early_prompts(args) -> list[str] | None:
    """The prompts, read before the model loads (a bad prompts file fails fast), unless the
    inputs are ``--samples`` or none are given: then :func:`model_inputs` decides once the
    model is known."""
    if getattr(args, "samples", None) or (getattr(args, "prompt", None) is None
                                          and not getattr(args, "prompts", None)):
        return None
    return prompts_from(args)


def takes_samples(model) -> bool:
    """A family whose runs read sample files (``--samples``), not prompts (spiking networks)."""
    return getattr(model, "inputs", "prompts") == "samples"


def model_inputs(args, model, prompts: list[str] | None, default=None):
    """What ``model`` runs on: the prompts (``--prompt`` / ``--prompts``), or for a model that
    takes samples the sample file of ``--samples`` (else ``default``), its first ``--limit``
    samples, checked against the model (channels, labels)."""
    samples = getattr(args, "samples", None)
    if not takes_samples(model):
        if samples:
            raise InputError("--samples is for spiking networks; give --prompt TEXT or "
                             "--prompts FILE")
        return prompts if prompts is not None else prompts_from(args)
    if prompts is not None:
        from neurolens.spec.kinds import KIND_WORDS
        raise InputError(f"a {KIND_WORDS.get(model.kind, model.kind)} runs on samples, not "
                         "prompts: give --samples FILE (SHD .h5/.hdf5 or .safetensors)")
    if not samples:
        if default is None:
            raise InputError("no samples: give --samples FILE (SHD .h5/.hdf5 or .safetensors)")
        samples = default
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise InputError("--limit must be >= 1")
    s = model.samples(str(samples))
    return s.subset(list(range(min(limit, len(s))))) if limit is not None else s


def files(value) -> list[str]:
    """A flag's file or files as a list."""
    return value if isinstance(value, list) else [value]


def load_model(args):
    """The model of ``-m`` and the loading flags; its notes go to stderr."""
    from neurolens.engine.loading import load
    max_memory = None
    if getattr(args, "max_memory", None) is not None:
        from neurolens.engine.offload import parse_max_memory
        max_memory = parse_max_memory(args.max_memory)
        if args.device != "auto":
            raise InputError("--max-memory is for --device auto")
    model = load(args.model, device=args.device, dtype=args.dtype,
                 allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code,
                 max_memory=max_memory)
    for n in getattr(model, "notes", []):
        print(f"note: {n}", file=sys.stderr)
    return model


def load_edits(model, path: str | None):
    """The edits file of ``--edits`` checked against ``model`` (warnings to stderr), or None."""
    if not path:
        return None
    from neurolens.spec.edits import EditSet
    edits = EditSet.load(path)
    for w in model.check_edits(edits):
        print(f"warning: {w}", file=sys.stderr)
    return edits


def site_pattern(model) -> str:
    """How the model's per-layer site names read, for ``info`` (``blocks.{l}.<kind>`` for a
    language model, ``layers.{l}.<kind>`` for a spiking network)."""
    return getattr(model, "site_pattern", "blocks.{l}.<kind>")


def generation_params(args):
    """The run flags as data (``GenerationParams``), checked."""
    from neurolens.spec.run import GenerationParams
    if args.max_new_tokens < 0:
        raise InputError("--max-new-tokens must be >= 0")
    return GenerationParams(max_new_tokens=args.max_new_tokens, seed=args.seed,
                            do_sample=args.sample, temperature=args.temperature,
                            stop=tuple(s.replace("\\n", "\n") for s in (args.stop or []))
                            ).check()


def denoise_params(args) -> dict:
    """The diffusion flags as ``DenoiseParams`` keywords, checked."""
    from neurolens.spec.run import DenoiseParams
    return DenoiseParams(steps=args.steps, guidance=args.guidance, seed=args.seed
                         ).check().to_json()
