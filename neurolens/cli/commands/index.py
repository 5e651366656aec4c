"""``neurolens index``: corpus neuron dashboards. ``build`` streams a corpus through the model and
keeps per neuron its top activating (document, position) pairs, a histogram and its firing
density; ``show`` prints one neuron's dashboard; ``top`` ranks a site's neurons; ``info``
describes an index. An index is keyed by a digest of every weight: ``-m MODEL`` finds the index
built for exactly that model (user-data folder or ``<model folder>/index``)."""

from __future__ import annotations

from pathlib import Path

from neurolens.cli.args import debug_arg, model_args
from neurolens.cli.common import load_model
from neurolens.cli.output import Progress, emit
from neurolens.errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="corpus neuron dashboards: top examples, histograms")
    debug_arg(p)
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = isub.add_parser("build", help="build, resume or extend an index over a corpus")
    model_args(b)
    b.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                   help="text file (a document per line), JSONL with a 'text' field, or a "
                        "folder of .txt files (several: documents numbered in order)")
    b.add_argument("--out", help="index folder (default: the user-data folder, where the GUI "
                   "finds it); an existing index is resumed or extended")
    b.add_argument("--site", action="append", dest="sites",
                   help="site or pattern (repeatable; default blocks.*.mlp.hook_post)")
    b.add_argument("--top-k", type=int, default=None, help="examples kept per neuron (20)")
    b.add_argument("--context", type=int, default=None,
                   help="tokens of context shown before the example (16)")
    b.add_argument("--threshold", type=float, default=None,
                   help="density counts tokens above this value (0.0)")
    b.add_argument("--bins", type=int, default=None, help="histogram bins (32)")
    b.add_argument("--max-docs", type=int, default=None,
                   help="index at most N documents in all (raise it later to extend)")
    b.add_argument("--chunk-docs", type=int, default=256,
                   help="documents per chunk file (a killed run resumes after the last one)")
    b.add_argument("--seq-len", type=int, default=None,
                   help="longer documents run as segments of this many tokens (256)")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--quiet", action="store_true")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)

    s = isub.add_parser("show", help="one neuron's dashboard")
    _index_args(s)
    s.add_argument("--site", required=True, help="e.g. blocks.1.mlp.hook_post")
    s.add_argument("--neuron", type=int, required=True)
    s.add_argument("-k", "--top", type=int, default=10, help="examples to show (10)")
    s.add_argument("--shade", action="store_true",
                   help="also recompute the neuron over each context window (needs the model)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    t = isub.add_parser("top", help="a site's neurons ranked by max, density or mean")
    _index_args(t)
    t.add_argument("--site", required=True)
    t.add_argument("--by", default="max", choices=["max", "density", "mean"])
    t.add_argument("-k", "--top", type=int, default=20)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_top)

    i = isub.add_parser("info", help="what an index holds")
    _index_args(i)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def _index_args(p) -> None:
    model_args(p)
    p.add_argument("--index", help="index folder (default: the index of -m's model)")


def _open(args, need_model: bool = False):
    """The index of ``--index`` (checked against ``-m`` when given) or of ``-m``'s model."""
    from neurolens.engine.neuron_index import NeuronIndex, find_index
    if args.index and not Path(args.index).is_dir():
        raise InputError(f"index folder not found: {args.index}")
    model = None
    if args.model is not None or not args.index or need_model:
        model = load_model(args)
        if getattr(model, "kind", "lm") != "lm":
            raise InputError("the neuron index works on language models")
    if args.index:
        return NeuronIndex.open(args.index, model=model), model
    found = find_index(model)
    if found is None:
        raise InputError(f"no index for this model ({model.name_or_path}); build one with "
                         "`neurolens index build --corpus FILE`")
    return NeuronIndex.open(found, model=model), model


def cmd_build(args) -> int:
    from neurolens.engine.neuron_index.corpus import Source
    # a missing, binary or empty corpus fails before the model loads
    extending = bool(args.out) and (Path(args.out) / "manifest.json").exists()
    if sum(Source(c).count() for c in args.corpus) == 0 and not extending:
        raise InputError(f"the corpus {', '.join(args.corpus)} has no documents")
    model = load_model(args)
    if getattr(model, "kind", "lm") != "lm":
        raise InputError("the neuron index works on language models")
    from neurolens.engine.neuron_index import build_index, user_index_dir
    out = Path(args.out) if args.out else user_index_dir(model)
    bar = Progress(not args.quiet)
    idx = build_index(model, args.corpus, out, sites=args.sites, top_k=args.top_k,
                      context=args.context, threshold=args.threshold, bins=args.bins,
                      max_docs=args.max_docs, chunk_docs=args.chunk_docs,
                      seq_len=args.seq_len, batch_size=args.batch_size,
                      progress=lambda d, t: bar("index", d, t))
    payload = idx.to_json()
    payload["seconds"] = idx.meta.get("seconds")
    emit(args, payload, idx.summary())
    return 0


def _line(ex) -> str:
    def esc(t: str) -> str:
        return t.replace("\n", "\\n").replace("\t", "\\t")
    if not ex.tokens:
        return f"{ex.value:9.4f}  doc {ex.doc} pos {ex.pos}"
    text = "".join(esc(t) if j != ex.focus else f"[[{esc(t)}]]"
                   for j, t in enumerate(ex.tokens))
    return f"{ex.value:9.4f}  doc {ex.doc:<6d} pos {ex.pos:<4d} {text}"


def cmd_show(args) -> int:
    if args.top < 1:
        raise InputError("-k must be >= 1")
    idx, model = _open(args, need_model=args.shade)
    d = idx.dashboard(args.site, args.neuron, k=args.top, model=model if args.shade else None)
    lines = [f"{d.site} neuron {d.neuron}: density {100 * d.density:.2f}% (> {d.threshold:g}) "
             f"over {d.n_tokens} tokens, mean {d.mean:.4g}, max {d.max:.4g}"]
    total = max(int(d.hist_counts.sum()), 1)
    lines.append("histogram (under, bins, over): " + " ".join(
        "." if not c else "<1%" if c < total / 200 else f"{c / total:.0%}"
        for c in d.hist_counts))
    lines.append(f"top {len(d.top)} examples:")
    lines += ["  " + _line(e) for e in d.top]
    if d.note:
        lines.append(f"note: {d.note}")
    emit(args, d.to_json(), "\n".join(lines))
    return 0


def cmd_top(args) -> int:
    if args.top < 1:
        raise InputError("-k must be >= 1")
    idx, _ = _open(args)
    ranked = idx.top_neurons(args.site, by=args.by, k=args.top)
    emit(args, {"site": args.site, "by": args.by,
                "neurons": [{"neuron": n, args.by: v} for n, v in ranked]},
         "\n".join(f"N{n:<6d} {args.by} {v:.4g}" for n, v in ranked))
    return 0


def cmd_info(args) -> int:
    idx, _ = _open(args)
    emit(args, idx.to_json(), idx.summary() + "\ncorpus: " + idx.corpus)
    return 0
