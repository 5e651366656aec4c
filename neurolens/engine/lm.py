"""The headless model object behind the Python API, the CLI and the GUI worker."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from collections.abc import Iterable

import numpy as np
import torch

from neurolens.engine import attention as attn_sites   # also registers the head ops
from neurolens.engine.adapters import Adapter, SiteRef, adapter_for, get_module
from neurolens.engine.baking import BakeTarget, WeightView
from neurolens.engine.capture import Capture, CaptureHandler
from neurolens.engine.hooks import CancelToken, HookSession, RunState
from neurolens.engine.model import ModelBase
from neurolens.engine.events import BatchDone, Failed, drain
from neurolens.engine.runner import (GenerationOutput, forward_events, generate_events,
                                     logsoftmax_np)
from neurolens.errors import InputError
from neurolens.spec.edits import EditSet
from neurolens.spec.run import GenerationParams
from neurolens.spec.sites import is_pattern, match_sites, parse_site
from neurolens.store.capture_store import CaptureStore


#: activations with act(0) == 0, so zeroing the pre-activation removes the neuron exactly
ZERO_AT_ZERO = {"silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh",
                "gelu_python", "relu", "quick_gelu", "gelu_10", "mish", "relu2", "gelu_accurate"}


def _activation(cfg) -> str:
    for k in ("hidden_act", "activation_function", "hidden_activation"):
        v = getattr(cfg, k, None)
        if isinstance(v, str):
            return v
    return ""


def _quiet_transformers() -> None:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _as_list(prompts) -> tuple[list, bool]:
    """Prompts as a list, and whether one was given alone: a string, a list of strings, one
    prompt as a list of token ids, or a list of such lists."""
    if isinstance(prompts, str):
        return [prompts], True
    out = list(prompts)
    if out and all(isinstance(p, int) and not isinstance(p, bool) for p in out):
        return [out], True
    if all(isinstance(p, str) for p in out):
        return out, False
    if all(isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p)
           for p in out):
        return [list(p) for p in out], False
    raise InputError("prompts must be strings or lists of token ids")


def _through_norm(direction: torch.Tensor, norm, model_type: str,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """The linear part of the final norm applied to a residual direction: LayerNorms (they
    subtract the mean) centre it first; the weight (``weight``, else the norm's own) multiplies
    (Gemma's RMSNorm stores w - 1)."""
    name = type(norm).__name__.lower()
    if isinstance(norm, torch.nn.LayerNorm) or ("layernorm" in name and "rms" not in name):
        direction = direction - direction.mean()
    if weight is None:
        weight = getattr(norm, "weight", None)
    if weight is not None:
        scale = weight.detach().float().to(direction.device)
        if model_type.startswith("gemma"):
            scale = 1.0 + scale
        direction = direction * scale
    return direction


class LanguageModel(ModelBase):
    """A loaded causal LM (or encoder, for capture) with canonical sites and edit hooks."""

    kind = "lm"

    def __init__(self, hf_model, tokenizer, name_or_path: str = "", device: str = "cpu",
                 base_edits: EditSet | None = None, notes: list[str] | None = None):
        _quiet_transformers()
        self._init_common(name_or_path,
                          torch.device(device) if not isinstance(device, torch.device) else device,
                          base_edits, notes)
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter: Adapter = adapter_for(hf_model)
        self.causal = not getattr(hf_model.config, "is_encoder_decoder", False) and \
            hf_model.config.model_type not in ("bert", "roberta", "distilbert")
        if self.adapter.arch is None:
            self.notes.append(self.adapter.message)
        if tokenizer is not None:
            if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
                tokenizer.pad_token = tokenizer.eos_token
            # causal LMs generate from the right edge: pad left; encoders use absolute
            # positions from 0: pad right
            tokenizer.padding_side = "left" if self.causal else "right"
        self._widths: dict[str, int] | None = None
        self._other_widths: dict[str, int] = {}      # non-canonical sites asked for
        self._tok_cache: dict[int, str] = {}
        self._fingerprint: str | None = None

    # -- description -----------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return self.adapter.model_type

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def pad_id(self) -> int:
        t = self.tokenizer
        if t is None:
            return int(getattr(self.hf.config, "pad_token_id", None) or 0)
        return int(t.pad_token_id if t.pad_token_id is not None else (t.eos_token_id or 0))

    def __repr__(self) -> str:
        return (f"<neurolens.LanguageModel {self.name_or_path!r} {self.model_type}, "
                f"{self.n_layers} layers, {self.n_params() / 1e6:.1f}M params>")

    def n_params(self) -> int:
        return sum(p.numel() for p in self.hf.parameters())

    @property
    def fingerprint(self) -> str:
        """Short hash of the config and parameter shapes and a sample of the weights."""
        if self._fingerprint is None:
            h = hashlib.sha1()
            cfg = self.hf.config.to_dict()
            for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
                cfg.pop(k, None)
            h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
            for name, p in self.hf.state_dict().items():
                h.update(f"{name}{tuple(p.shape)}".encode())
            from neurolens.engine.offload import parameter   # offloaded: read from disk
            first = parameter(self.hf, next(iter(self.hf.named_parameters()))[0])
            first = first.flatten()[:256].float().cpu()
            h.update(first.numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def sites(self) -> dict[str, int]:
        """Canonical site names with their widths, in layer order."""
        if self._widths is None:
            self._widths = self._probe_widths(self.adapter.canonical_sites())
        return dict(self._widths)

    def site_width(self, name: str) -> int:
        """The width of any site (canonical, attention or native); a site outside
        :meth:`sites` is probed once and kept apart, so :meth:`sites` and the order patterns
        expand in stay as they are."""
        w = self.sites().get(name)
        if w is None:
            w = self._other_widths.get(name)
        if w is None:
            w = self._other_widths[name] = self._probe_widths([name])[name]
        return w

    def resolve(self, name: str, io: str = "input") -> SiteRef:
        """The hook point of a site (canonical or native name; ``io`` is the family's
        protocol argument: a language model's site names say their side themselves)."""
        return self.adapter.resolve(self.hf, name)

    def resolve_sites(self, patterns: str | Iterable[str]) -> list[str]:
        """Expand patterns (``blocks.*.mlp.hook_post``) and check every name exists."""
        if isinstance(patterns, str):
            patterns = [patterns]
        out: list[str] = []
        avail = list(self.sites()) + list(self.attention_sites())
        for p in patterns:
            if is_pattern(p):
                found = match_sites(p, avail)
                if not found:
                    raise InputError(f"site pattern '{p}' matches no site of this model "
                                     f"(e.g. {avail[0] if avail else 'model.x:output'})")
            else:
                self.resolve(p)
                found = [p]
            out.extend(s for s in found if s not in out)
        return out

    def attention_sites(self) -> dict[str, int]:
        """Attention sites with their widths (:mod:`neurolens.engine.attention`)."""
        return attn_sites.attention_sites(self)

    def attention(self, prompts, sites=("blocks.*.attn.hook_pattern",), **kw):
        """Attention patterns / scores ``[heads, query, key]`` per prompt (eager attention)."""
        return attn_sites.capture_attention(self, prompts, sites, **kw)

    def _probe_widths(self, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        widths: dict[str, int] = {}
        state = RunState(batch=1, seq=2, attention_mask=torch.ones(1, 2, dtype=torch.long),
                         prompt_index=[0])
        sess = HookSession(state)
        for n in names:
            ref = self.resolve(n)

            def rec(x, st, n=n):
                widths[n] = int(x.shape[-1])
            sess.add(ref, rec)
        ids = torch.full((1, 2), min(1, self.hf.config.vocab_size - 1), dtype=torch.long,
                         device=self.device)
        with sess, torch.inference_mode():
            self.hf(input_ids=ids)
        missing = [n for n in names if n not in widths]
        if missing:
            raise InputError(f"site(s) {', '.join(missing)} did not run in a forward pass")
        return widths

    # -- tokenization --------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> dict:
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer")
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        if enc["input_ids"].shape[1] == 0:
            raise InputError("empty prompt: type some text first")
        return enc

    def token_strings(self, ids: list[int]) -> list[str]:
        if self.tokenizer is None:
            return [str(i) for i in ids]
        cache = self._tok_cache
        out = []
        for i in ids:
            s = cache.get(i)
            if s is None:
                s = cache[i] = self.tokenizer.decode([i])
            out.append(s)
        return out

    def _id_encoder(self, prompts):
        """An encode function for prompts given as token-id lists (None for text prompts)."""
        if not prompts or isinstance(prompts[0], str):
            return None
        pad = self.pad_id
        left = self.tokenizer is None or self.tokenizer.padding_side == "left"

        def encode(rows):
            rows = [[int(t) for t in r] for r in rows]
            L = max(len(r) for r in rows)
            if left:
                ids = [[pad] * (L - len(r)) + r for r in rows]
                mask = [[0] * (L - len(r)) + [1] * len(r) for r in rows]
            else:
                ids = [r + [pad] * (L - len(r)) for r in rows]
                mask = [[1] * len(r) + [0] * (L - len(r)) for r in rows]
            return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        return encode

    # -- edits ---------------------------------------------------------------------------------
    def _validation_widths(self, edits: EditSet) -> dict[str, int]:
        widths = dict(self.sites()) | self.attention_sites()
        for op in edits:
            if not is_pattern(op.site) and op.site not in widths:
                try:
                    widths[op.site] = self.site_width(op.site)
                except InputError:
                    pass  # validate() reports the unknown site with the field name
        return widths

    def _check_op(self, op) -> None:
        heads = getattr(op, "heads", None)
        if heads is not None and parse_site(op.site) is not None:
            attn_sites.check_heads(self, op.site, heads)
        elif heads is not None or op.op == "attn_topk":
            attn_sites.geometry(self)

    def session_factory(self, edits: EditSet | None = None, captures: dict | None = None,
                        ctx: dict | None = None):
        ctx = ctx if ctx is not None else {}    # the attention plan of the run lands in it
        factory = super().session_factory(edits, captures, ctx)
        return attn_sites.scoped_factory(self, factory, ctx)

    def bake_target(self, hf, site: str) -> BakeTarget | None:
        """The linear layers of ``hf`` (a copy of this model) around a canonical FFN site."""
        s = parse_site(site)
        arch = self.adapter.arch
        if s is None or arch is None:
            return None
        layer_path = ".".join(p for p in (self.adapter.layers_path, str(s.layer)) if p)

        def view(rel: str, part=None) -> WeightView:
            mod = get_module(hf, f"{layer_path}.{rel}")
            out_dim = mod.weight.shape[1] if arch.conv1d else mod.weight.shape[0]
            off = part[0] * (out_dim // part[1]) if part else 0
            return WeightView(mod, arch.conv1d, off)
        nat = arch.sites.get(s.kind)
        if s.kind == "mlp.hook_post":
            return BakeTarget(reads=view(arch.down))
        if s.kind == "mlp.hook_pre":     # act(pre): zeroing pre zeroes post when act(0) = 0
            return BakeTarget(writes=view(nat.module, nat.part),
                              writes_zero=_activation(hf.config) in ZERO_AT_ZERO)
        if s.kind == "mlp.hook_pre_linear":
            return BakeTarget(writes=view(nat.module, nat.part), writes_linear=True,
                              writes_zero=True)
        if s.kind == "hook_mlp_out":
            return BakeTarget(writes=view(arch.down), writes_linear=True, writes_zero=True)
        if s.kind == "attn.hook_z" and arch.attn is not None:
            return attn_sites.ops.head_bake_target(self, view(arch.attn.o_proj))
        return None

    export_words = {"source": "model", "weights": "weights", "library": "`transformers`",
                    "why": "they depend on the input, the position or a random draw",
                    "loader": "plain transformers"}

    def _export_copy(self):
        import copy

        from neurolens.engine.offload import device_map, gathered_copy
        if device_map(self.hf):      # placed by accelerate: a plain CPU copy, offload gathered
            return gathered_copy(self.hf)
        return copy.deepcopy(self.hf)

    def _save_export(self, hf, tmp: Path) -> None:
        hf.save_pretrained(tmp, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(tmp)

    def _modules_run_once(self) -> bool:
        """True when every transformer block is its own module (no weight-shared layers that run
        again later in the forward), so a forward may stop after its last captured site."""
        cached = getattr(self, "_run_once", None)
        if cached is None:
            try:
                layers = get_module(self.hf, self.adapter.layers_path)
                cached = len({id(m) for m in layers}) == len(layers) > 0
            except Exception:  # noqa: BLE001 - unknown layout: never stop early
                cached = False
            self._run_once = cached
        return cached

    # -- capture ---------------------------------------------------------------------------------
    def capture_events(self, prompts: list[str], sites, *, reduce: str = "tokens",
                       edits: EditSet | None = None, store: CaptureStore | None = None,
                       batch_size: int = 8, cancel: CancelToken | None = None,
                       set_names: list[str] | None = None):
        names = self.resolve_sites(sites)
        if any(attn_sites.is_pattern_site(s) for s in names):
            attn_sites.check_patterns(self)      # names an architecture without weights
            raise InputError("attention pattern / score sites are [heads, query, key] per prompt: "
                             "capture them with model.attention(prompts, sites)")
        store = store if store is not None else CaptureStore(stats=False)
        for i, p in enumerate(prompts):
            store.set_prompt(i, p, set_names[i] if set_names else None)
        captures = {s: CaptureHandler(s, store, reduce) for s in names}
        factory = self.session_factory(edits, captures)

        def on_prompt(i, ids):
            store.add_tokens(i, self.token_strings(ids), prompt=True)
        # stop each forward after the last site that captures or reports (see HookSession)
        yield from forward_events(self, prompts, factory, batch_size, cancel, on_prompt,
                                  encode=self._id_encoder(prompts),
                                  stop_early=self._modules_run_once())

    def capture(self, prompts: str | Iterable[str], sites=("blocks.*.mlp.hook_post",), *,
                reduce: str = "tokens", edits: EditSet | None = None, batch_size: int = 8,
                store: CaptureStore | None = None, set_name: str | None = None,
                out: str | Path | None = None, cancel: CancelToken | None = None,
                progress=None) -> Capture:
        """Run the prompts and record activations at the sites (patterns allowed).

        ``out=`` streams the rows to a safetensors file (bounded memory) instead of RAM.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise InputError("no prompts given")
        names = self.resolve_sites(sites)
        if store is None:
            store = CaptureStore(stats=set_name is not None, out=out)
        set_names = [set_name] * len(prompts) if set_name else None
        try:
            drain(self.capture_events(prompts, names, reduce=reduce, edits=edits, store=store,
                                      batch_size=batch_size, cancel=cancel, set_names=set_names),
                  progress, "capture")
        except BaseException:
            store.abort()
            raise
        tokens = [store.tokens.get(i, []) for i in range(len(prompts))]
        cap = Capture(prompts, names, tokens, reduce, store=store)
        if out is not None:
            store.close(cap.metadata())
            cap.path = Path(out)
        return cap

    # -- forward / generation ----------------------------------------------------------------------
    def logits(self, prompts: str | Iterable[str] | list[list[int]], edits: EditSet | None = None,
               batch_size: int = 8) -> list[np.ndarray]:
        """Per-prompt ``[tokens, vocab]`` float32 logits (prompts may be token-id lists)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        out: dict[int, np.ndarray] = {}
        factory = self.session_factory(edits)
        encode = self._id_encoder(prompts)
        for ev in forward_events(self, prompts, factory, batch_size, encode=encode,
                                 logits_sink=lambda i, a: out.__setitem__(i, a)):
            if isinstance(ev, Failed):
                raise ev.error
        return [out[i] for i in range(len(prompts))]

    def attribute(self, prompts, answer, contrast=None, **kw):
        """Causal neuron scores for ``answer`` (see :func:`neurolens.engine.attribution.
        attribute`: attribution patching by default, gradient x activation, or exact)."""
        from neurolens.engine.attribution import attribute
        return attribute(self, prompts, answer, contrast, **kw)

    def score_continuations(self, prompts: list[str], answers: list[str],
                            edits: EditSet | None = None, batch_size: int = 16, progress=None
                            ) -> list[dict]:
        """Teacher-forced scoring of ``answer`` after ``prompt``: per item the number of answer
        tokens, how many the model predicts (argmax) correctly, their summed NLL, and whether a
        gate edit abstained (then every answer token counts as wrong)."""
        tok = self.tokenizer
        seqs, starts = [], []
        for p, a in zip(prompts, answers):
            enc = tok(p + a, return_offsets_mapping=True, add_special_tokens=False)
            ids, offs = enc["input_ids"], enc["offset_mapping"]
            start = next((k for k, (o, _) in enumerate(offs) if o >= len(p)), len(ids))
            seqs.append(ids)
            starts.append(max(1, start))
        results: list[dict | None] = [None] * len(seqs)
        factory = self.session_factory(edits)

        def init(state, idx):
            state.extra["gate_from"] = [starts[i] - 1 for i in idx]

        logits: dict[int, np.ndarray] = {}
        for ev in forward_events(self, seqs, factory, batch_size, encode=self._id_encoder(seqs),
                                 logits_sink=lambda i, a: logits.__setitem__(i, a),
                                 state_init=init):
            if isinstance(ev, Failed):
                raise ev.error
            if isinstance(ev, BatchDone):
                ab = ev.extra.get("abstain")
                for row, i in enumerate(ev.prompt_indices):
                    lg = logits.pop(i)
                    s, ids = starts[i], seqs[i]
                    logp = logsoftmax_np(lg[s - 1:len(ids) - 1].astype(np.float64))
                    tgt = np.array(ids[s:])
                    abstain = bool(ab[row]) if ab is not None else False
                    results[i] = {"n": len(tgt), "abstained": abstain,
                                  "correct": 0 if abstain else int((logp.argmax(-1) == tgt).sum()),
                                  "nll": float(-logp[np.arange(len(tgt)), tgt].sum())}
                if progress is not None:
                    progress(ev.done, ev.total)
        return results  # type: ignore[return-value]

    def generate_events(self, prompts: list[str], *, edits: EditSet | None = None,
                        params: GenerationParams | None = None, cancel: CancelToken | None = None,
                        capture_sites=None, store: CaptureStore | None = None,
                        reduce: str = "tokens", set_names: list[str] | None = None, ctx=None):
        """Generator of runner events (see :mod:`neurolens.engine.runner`)."""
        params = params or GenerationParams()
        if not self.causal:
            raise InputError(f"{self.model_type} is an encoder: generation needs a causal LM "
                             "(capture works)")
        captures = {}
        if capture_sites:
            if store is None:
                raise InputError("capture during generation needs a store")
            for s in self.resolve_sites(capture_sites):
                captures[s] = CaptureHandler(s, store, reduce)
        if store is not None:
            for i, p in enumerate(prompts):
                store.set_prompt(i, p, set_names[i] if set_names else None)
        factory = self.session_factory(edits, captures, ctx)

        def on_prompt(i, ids):
            if store is not None:
                store.add_tokens(i, self.token_strings(ids), prompt=True)
        yield from generate_events(self, prompts, factory, params, cancel, on_prompt,
                                   encode=self._id_encoder(prompts))

    def generate(self, prompts: str | Iterable[str], *, edits: EditSet | None = None,
                 max_new_tokens: int = 32, seed: int = 0, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 stop: Iterable[str] = (), batch_size: int = 16, ignore_eos: bool = False,
                 cancel: CancelToken | None = None, progress=None, row_stop=None,
                 params: GenerationParams | None = None):
        """Generate for one prompt (returns a GenerationOutput) or a list (returns a list).
        Prompts are text or token-id lists. ``stop`` ends every row at any of its strings;
        ``row_stop`` (one sequence of strings per prompt) adds stops for single rows.
        ``params`` (a :class:`~neurolens.spec.run.GenerationParams`) replaces the keyword
        settings."""
        prompts, single = _as_list(prompts)
        if not prompts:
            raise InputError("no prompts given")
        if params is None:
            params = GenerationParams(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      temperature=temperature, top_k=top_k, top_p=top_p,
                                      seed=seed, stop=tuple(stop), batch_size=batch_size,
                                      ignore_eos=ignore_eos, row_stop=row_stop)
        params.check()
        if params.row_stop is not None:
            params = dataclasses.replace(params,
                                         row_stop=tuple(tuple(s) for s in params.row_stop))
            if len(params.row_stop) != len(prompts):
                raise InputError(f"row_stop has {len(params.row_stop)} entries for "
                                 f"{len(prompts)} prompts")
        result = drain(self.generate_events(prompts, edits=edits, params=params, cancel=cancel),
                       progress, "generation")
        return result[0] if single else result

    # -- neuron analysis ---------------------------------------------------------------------------
    def logit_lens(self, layer: int, neuron: int, k: int = 10) -> dict:
        """Tokens that neuron ``layer.neuron`` (a ``hook_post`` unit) promotes and suppresses:
        its output direction through the final norm's linear part and the unembedding, as
        TransformerLens folds it: a LayerNorm centres the direction (subtracts its mean) and
        multiplies by its weight; an RMSNorm multiplies by its weight (Gemma: 1 + weight)."""
        arch = self.adapter.arch
        if arch is None or not arch.unembed:
            raise InputError("the logit lens needs a known causal-LM architecture")
        from neurolens.engine.adapters import try_module
        from neurolens.engine.offload import parameter     # offloaded weights: read from disk
        w = parameter(self.hf, f"{self.adapter.layers_path}.{layer}.{arch.down}.weight")
        col = (w[neuron, :] if arch.conv1d else w[:, neuron]).float()   # Conv1D rows: inputs
        npath, norm = try_module(self.hf, arch.final_norm)
        if norm is not None:
            nw = (parameter(self.hf, f"{npath}.weight")
                  if getattr(norm, "weight", None) is not None else None)
            col = _through_norm(col, norm, self.model_type, nw)
        hpath, head = try_module(self.hf, arch.unembed)
        if head is None:
            head = self.hf.get_output_embeddings()
            hpath = next(n for n, m in self.hf.named_modules() if m is head)
        promote, suppress = self._lens_top(parameter(self.hf, f"{hpath}.weight"), col, k)
        dec = self.tokenizer.decode if self.tokenizer is not None else str
        return {"promote": [(dec([i]), v) for i, v in promote],
                "suppress": [(dec([i]), v) for i, v in suppress]}

    @staticmethod
    def _lens_top(hw: torch.Tensor, col: torch.Tensor, k: int):
        """The ``k`` highest and the ``k`` lowest entries of ``hw @ col`` as two lists of
        (row, value), strongest first, exact to float64: one pass over the vocabulary ``hw``
        (vocab x d) in its own dtype, with no float32 copy of it (3.7 GB at 256k x 3,584),
        ~70 ms there in bf16 on 2 CPU cores; then the rows that pass could have misordered
        (the k best and every row within its rounding error of them) scored again in float64,
        a few hundred rows at a time."""
        k = min(int(k), hw.shape[0])
        exact_dtype = torch.float32 if hw.device.type == "mps" else torch.float64
        with torch.inference_mode():
            col_hi = col.detach().to(device=hw.device, dtype=exact_dtype)
            approx = (hw @ col_hi.to(hw.dtype)).float()
            # the pass rounds col and the scores to the weights' dtype (accumulating in float32)
            tol = 2 * torch.finfo(hw.dtype).eps * float(approx.abs().max()) + 1e-30
            out = []
            for sign in (1.0, -1.0):
                s = approx * sign
                m = min(hw.shape[0], max(4 * k, 64))
                cand = torch.topk(s, m)
                floor = float(cand.values[k - 1]) - 2 * tol
                idx = cand.indices[cand.values >= floor]
                if len(idx) == m:                   # more near-ties than candidates
                    idx = torch.nonzero(s >= floor).flatten()[:4096]
                exact = torch.cat([(hw[idx[i:i + 512]].to(exact_dtype) @ col_hi) * sign
                                   for i in range(0, len(idx), 512)])
                order = torch.argsort(-exact, stable=True)[:k]
                out.append([(int(idx[j]), float(exact[j] * sign)) for j in order])
        return out[0], out[1]

    # -- compare / export --------------------------------------------------------------------------
    def compare(self, prompts: str | Iterable[str], edits: EditSet,
                params: GenerationParams | None = None, **gen_kwargs):
        from neurolens.engine.compare import compare
        return compare(self, prompts, edits, params, **gen_kwargs)


__all__ = ["LanguageModel", "Capture", "GenerationOutput", "GenerationParams"]
