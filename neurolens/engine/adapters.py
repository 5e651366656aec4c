"""Architecture table: canonical site names -> native modules, as data.

Each entry says where a model keeps its blocks and, inside one block, which module (and whether
its input or output) holds each canonical site. ``part`` picks a chunk of a fused projection
(Phi-3's ``gate_up_proj`` holds gate and up side by side).

Unknown architectures still work through native names (``model.layers.3.mlp.down_proj:input``);
:func:`adapter_for` then says so plainly instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neurolens.errors import InputError
from neurolens.spec.sites import SITE_KINDS, parse_site, site_name


@dataclass(frozen=True)
class Native:
    module: str              # path relative to the block ("" = the block itself)
    io: str = "output"       # "input" (first positional argument) or "output"
    part: tuple[int, int] | None = None  # (chunk index, number of chunks) along the last dim


@dataclass(frozen=True)
class Arch:
    layers: tuple[str, ...]             # candidate paths of the block ModuleList
    sites: dict[str, Native]            # site kind -> native location
    down: str                           # down/out projection (its input is hook_post)
    pre: str | None = None              # module whose output is hook_pre
    up: str | None = None               # module whose output is hook_pre_linear
    conv1d: bool = False                # GPT-2 Conv1D weights are [in, out]
    unembed: tuple[str, ...] = ("lm_head",)
    final_norm: tuple[str, ...] = ()
    tested: bool = False                # covered by the test suite with a config-built model
    attn: AttnPaths | None = None       # the attention module and its output projection


@dataclass(frozen=True)
class AttnPaths:
    """Where a block keeps its self-attention (relative to the block)."""

    module: str                         # the attention module (its output is hook_attn_out)
    o_proj: str                         # output projection (its input is hook_z, heads x d_head)


def _gated(layers=("model.layers", "layers"), final_norm=("model.norm", "norm")) -> Arch:
    return Arch(layers=layers, sites={
        "mlp.hook_pre": Native("mlp.gate_proj"),
        "mlp.hook_pre_linear": Native("mlp.up_proj"),
        "mlp.hook_post": Native("mlp.down_proj", "input"),
        "hook_mlp_out": Native("mlp"),
        "hook_resid_post": Native(""),
    }, down="mlp.down_proj", pre="mlp.gate_proj", up="mlp.up_proj", final_norm=final_norm,
        tested=True)


def _plain(layers, fc_in, fc_out, mlp, conv1d=False, final_norm=(), tested=False) -> Arch:
    return Arch(layers=layers, sites={
        "mlp.hook_pre": Native(fc_in),
        "mlp.hook_post": Native(fc_out, "input"),
        "hook_mlp_out": Native(mlp),
        "hook_resid_post": Native(""),
    }, down=fc_out, pre=fc_in, conv1d=conv1d, final_norm=final_norm, tested=tested)


ARCHS: dict[str, Arch] = {
    **{k: _gated() for k in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                             "gemma3_text", "olmo", "olmo2", "granite", "cohere", "smollm3")},
    "phi3": Arch(layers=("model.layers", "layers"), sites={
        "mlp.hook_pre": Native("mlp.gate_up_proj", part=(0, 2)),
        "mlp.hook_pre_linear": Native("mlp.gate_up_proj", part=(1, 2)),
        "mlp.hook_post": Native("mlp.down_proj", "input"),
        "hook_mlp_out": Native("mlp"),
        "hook_resid_post": Native(""),
    }, down="mlp.down_proj", pre="mlp.gate_up_proj", up="mlp.gate_up_proj",
        final_norm=("model.norm", "norm"), tested=True),
    "gpt2": _plain(("transformer.h", "h"), "mlp.c_fc", "mlp.c_proj", "mlp", conv1d=True,
                   final_norm=("transformer.ln_f", "ln_f"), tested=True),
    "gpt_neox": _plain(("gpt_neox.layers", "layers"), "mlp.dense_h_to_4h", "mlp.dense_4h_to_h",
                       "mlp", final_norm=("gpt_neox.final_layer_norm", "final_layer_norm"),
                       tested=True),
    # OPT has no MLP module: fc1/fc2 sit on the decoder layer (and see 2-D [b*s, d] tensors)
    "opt": _plain(("model.decoder.layers", "decoder.layers"), "fc1", "fc2", "fc2",
                  final_norm=("model.decoder.final_layer_norm",), tested=True),
    "gptj": _plain(("transformer.h", "h"), "mlp.fc_in", "mlp.fc_out", "mlp",
                   final_norm=("transformer.ln_f",)),
    "phi": _plain(("model.layers", "layers"), "mlp.fc1", "mlp.fc2", "mlp",
                  final_norm=("model.final_layernorm",)),
    "gpt_bigcode": _plain(("transformer.h", "h"), "mlp.c_fc", "mlp.c_proj", "mlp",
                          final_norm=("transformer.ln_f",)),
    "starcoder2": _plain(("model.layers", "layers"), "mlp.c_fc", "mlp.c_proj", "mlp",
                         final_norm=("model.norm",)),
    "bloom": _plain(("transformer.h", "h"), "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "mlp",
                    final_norm=("transformer.ln_f",)),
    # encoders (capture; editing works too, generation does not apply)
    "bert": _plain(("bert.encoder.layer", "encoder.layer"), "intermediate.dense",
                   "output.dense", "output.dense", tested=True),
    "roberta": _plain(("roberta.encoder.layer", "encoder.layer"), "intermediate.dense",
                      "output.dense", "output.dense"),
    "distilbert": _plain(("distilbert.transformer.layer", "transformer.layer"), "ffn.lin1",
                         "ffn.lin2", "ffn.lin2", tested=True),
}
# encoders: no unembedding for the logit lens
for _k in ("bert", "roberta", "distilbert"):
    ARCHS[_k] = Arch(**{**ARCHS[_k].__dict__, "unembed": ()})

#: self-attention per architecture (model_type -> attention module, output projection): the
#: sites ``attn.hook_z`` (the projection's input), ``hook_attn_out`` (the module's output) and the
#: pattern / score sites (read inside the module's eager attention)
ATTN_PATHS: dict[str, tuple[str, str]] = {
    **{k: ("self_attn", "self_attn.o_proj") for k in (
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2",
        "granite", "cohere", "smollm3", "phi3", "starcoder2")},
    "gpt2": ("attn", "attn.c_proj"),                  # Conv1D: weight [in, out]
    "gpt_neox": ("attention", "attention.dense"),
    "opt": ("self_attn", "self_attn.out_proj"),
    "gptj": ("attn", "attn.out_proj"),
    "phi": ("self_attn", "self_attn.dense"),
    "gpt_bigcode": ("attn", "attn.c_proj"),
}
for _k, (_mod, _o) in ATTN_PATHS.items():
    ARCHS[_k] = Arch(**{**ARCHS[_k].__dict__, "attn": AttnPaths(_mod, _o), "sites": {
        **ARCHS[_k].sites, "attn.hook_z": Native(_o, "input"), "hook_attn_out": Native(_mod),
        "attn.hook_pattern": Native(_mod), "attn.hook_attn_scores": Native(_mod)}})


def get_module(root, path: str):
    """Resolve a dotted path (``""`` is the root)."""
    mod = root
    if not path:
        return mod
    for part in path.split("."):
        if part.isdigit() and hasattr(mod, "__getitem__"):
            mod = mod[int(part)]
        else:
            mod = getattr(mod, part)
    return mod


def try_module(root, paths: tuple[str, ...]):
    for p in paths:
        try:
            return p, get_module(root, p)
        except (AttributeError, IndexError, TypeError):
            continue
    return None, None


@dataclass
class SiteRef:
    """A resolved site: the module object to hook and how to read it."""

    name: str                 # canonical or native name
    module_path: str          # full dotted path from the model root
    module: object            # torch.nn.Module
    io: str                   # "input" | "output"
    part: tuple[int, int] | None = None
    layer: int | None = None
    kind: str | None = None

    @property
    def native_name(self) -> str:
        suffix = f"[{self.part[0]}/{self.part[1]}]" if self.part else ""
        return f"{self.module_path}:{self.io}{suffix}"


@dataclass
class Adapter:
    model_type: str
    arch: Arch | None
    layers_path: str | None
    n_layers: int
    message: str = ""
    _cache: dict = field(default_factory=dict)

    def canonical_sites(self) -> list[str]:
        if self.arch is None:
            return []
        return [site_name(i, k) for i in range(self.n_layers) for k in SITE_KINDS
                if k in self.arch.sites]

    def resolve(self, model, name: str) -> SiteRef:
        """Canonical or native site name -> :class:`SiteRef`. Raises InputError when unknown."""
        ref = self._cache.get(name)
        if ref is not None:
            return ref
        s = parse_site(name)
        if s is not None:
            if self.arch is None:
                raise InputError(f"unknown site '{name}': {self.message}")
            if s.layer >= self.n_layers:
                raise InputError(f"unknown site '{name}': this model has {self.n_layers} layers "
                                 f"(blocks.0 .. blocks.{self.n_layers - 1})")
            nat = self.arch.sites.get(s.kind)
            if nat is None:
                raise InputError(f"unknown site '{name}': {self.model_type} has no "
                                 f"{s.kind} (it has {', '.join(self.arch.sites)})")
            path = ".".join(p for p in (self.layers_path, str(s.layer), nat.module) if p)
            ref = SiteRef(name, path, get_module(model, path), nat.io, nat.part, s.layer, s.kind)
        else:
            if ":" not in name:
                raise InputError(f"unknown site '{name}' (use blocks.L.mlp.hook_post or a native "
                                 "module path such as model.layers.0.mlp.down_proj:input)")
            path, io = name.rsplit(":", 1)
            if io not in ("input", "output"):
                raise InputError(f"unknown site '{name}': the part after ':' must be "
                                 "'input' or 'output'")
            try:
                mod = get_module(model, path)
            except (AttributeError, IndexError, TypeError):
                raise InputError(f"unknown site '{name}': the model has no module "
                                 f"'{path}'") from None
            ref = SiteRef(name, path, mod, io)
        self._cache[name] = ref
        return ref

    def block_module(self, model, layer: int, rel: str):
        path = ".".join(p for p in (self.layers_path, str(layer), rel) if p)
        return get_module(model, path)


def adapter_for(model) -> Adapter:
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", type(model).__name__)
    arch = ARCHS.get(model_type)
    if arch is not None:
        path, layers = try_module(model, arch.layers)
        if layers is not None:
            return Adapter(model_type, arch, path, len(layers))
    # fallback: no canonical names
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0) or 0
    msg = (f"architecture '{model_type}' is not in neurolens' table: canonical site names are "
           "not available; use native module paths like "
           "'<module path>:output' (see `neurolens info` for the module list)")
    return Adapter(model_type, None, None, int(n), message=msg)
