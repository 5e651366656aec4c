"""Where each canonical site lives in each tested architecture, written out by hand from the
transformers model code (not from neurolens' architecture table), and plain torch / transformers
references (readers, greedy generation).

A site is ``(module path with {l} for the layer, "input" | "output", fused half or None)``.
``half`` is ``(k, n)``: chunk k of n along the last dimension (Phi-3's ``gate_up_proj`` computes
``gate, up = out.chunk(2, -1)``: the gate is the first half).
"""

from __future__ import annotations

import torch
from transformers.activations import ACT2FN


def _gated(prefix="model.layers.{l}"):
    return {"mlp.hook_pre": (f"{prefix}.mlp.gate_proj", "output", None),
            "mlp.hook_pre_linear": (f"{prefix}.mlp.up_proj", "output", None),
            "mlp.hook_post": (f"{prefix}.mlp.down_proj", "input", None),
            "hook_mlp_out": (f"{prefix}.mlp", "output", None),
            "hook_resid_post": (prefix, "output", None)}


def _plain(block, fc_in, fc_out, mlp_out):
    """An un-gated FFN: hook_pre is fc_in's output, hook_post fc_out's input."""
    return {"mlp.hook_pre": (f"{block}.{fc_in}", "output", None),
            "mlp.hook_post": (f"{block}.{fc_out}", "input", None),
            "hook_mlp_out": (f"{block}.{mlp_out}", "output", None),
            "hook_resid_post": (block, "output", None)}


NATIVE = {
    "gpt2": _plain("transformer.h.{l}", "mlp.c_fc", "mlp.c_proj", "mlp"),
    "gpt_neox": _plain("gpt_neox.layers.{l}", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "mlp"),
    # OPT has no MLP module: fc1 and fc2 sit on the decoder layer
    "opt": _plain("model.decoder.layers.{l}", "fc1", "fc2", "fc2"),
    "llama": _gated(), "mistral": _gated(), "qwen2": _gated(), "gemma": _gated(),
    "gemma2": _gated(),
    "phi3": {"mlp.hook_pre": ("model.layers.{l}.mlp.gate_up_proj", "output", (0, 2)),
             "mlp.hook_pre_linear": ("model.layers.{l}.mlp.gate_up_proj", "output", (1, 2)),
             "mlp.hook_post": ("model.layers.{l}.mlp.down_proj", "input", None),
             "hook_mlp_out": ("model.layers.{l}.mlp", "output", None),
             "hook_resid_post": ("model.layers.{l}", "output", None)},
    "bert": _plain("encoder.layer.{l}", "intermediate.dense", "output.dense", "output.dense"),
    "distilbert": _plain("transformer.layer.{l}", "ffn.lin1", "ffn.lin2", "ffn.lin2"),
}

#: the FFN activation of each architecture, by its transformers name
ACT = {"gpt2": "gelu_new", "gpt_neox": "gelu", "opt": "relu", "llama": "silu",
       "mistral": "silu", "qwen2": "silu", "gemma": "gelu_pytorch_tanh",
       "gemma2": "gelu_pytorch_tanh", "phi3": "silu", "bert": "gelu", "distilbert": "gelu"}
GATED = {"llama", "mistral", "qwen2", "gemma", "gemma2", "phi3"}


def act_fn(arch: str):
    return ACT2FN[ACT[arch]]


def module(model, path: str):
    return model.get_submodule(path)


def native(arch: str, kind: str, layer: int):
    path, io, half = NATIVE[arch][kind]
    return path.format(l=layer), io, half


class PlainReader:
    """Plain forward (pre-)hooks on hard-coded modules: records every call's tensor as
    ``[batch, seq, width]`` copies, the fused half cut out."""

    def __init__(self, model, arch: str, sites: dict[str, tuple[str, int]], batch_seq=None):
        self.model, self.arch, self.sites = model, arch, sites
        self.calls: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
        self._handles = []
        self.batch_seq = batch_seq

    def _grab(self, site, half, x):
        x = x[0] if isinstance(x, tuple) else x
        x = x.detach().clone().float()
        if x.ndim == 2 and self.batch_seq is not None:   # OPT's fc1/fc2 see [b*s, d]
            x = x.view(*self.batch_seq(), x.shape[-1])
        elif x.ndim == 2:
            x = x[None]
        if half is not None:
            k, n = half
            w = x.shape[-1] // n
            x = x[..., k * w:(k + 1) * w]
        self.calls[site].append(x)

    def __enter__(self):
        for site, (kind, layer) in self.sites.items():
            path, io, half = native(self.arch, kind, layer)
            mod = module(self.model, path)
            if io == "output":
                h = mod.register_forward_hook(
                    lambda m, a, o, site=site, half=half: self._grab(site, half, o))
            else:
                h = mod.register_forward_pre_hook(
                    lambda m, a, site=site, half=half: self._grab(site, half, a[0]))
            self._handles.append(h)
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def plain_greedy(model, ids: list[int], n: int) -> list[int]:
    """``n`` new token ids from plain transformers greedy ``generate`` (end-of-text ignored)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             pad_token_id=0, eos_token_id=None,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist()


def plain_read(model, arch: str, sites: dict, **inputs) -> dict:
    """One plain forward of ``model(**inputs)`` (batch of one) with a :class:`PlainReader`:
    ``{key: numpy [tokens, width]}`` for ``sites = {key: (kind, layer)}``."""
    with PlainReader(model, arch, sites) as r, torch.no_grad():
        model(**inputs)
    return {s: r.calls[s][0][0].numpy() for s in sites}
