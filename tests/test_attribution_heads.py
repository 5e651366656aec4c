"""Attribution per attention head (issue 28, item 6): exact patching of a head's whole d_head
slice of ``hook_z`` against plain torch hooks on the output projection's input (GPT-2's c_proj,
Llama's o_proj with grouped-query attention), the gradient methods against hand-written autograd
summed over the slice, prune_head edits of the top heads, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tiny
from neurolens.cli import main
from neurolens.engine.attribution import attribute, metric
from neurolens.spec.edits import EditSet
from neurolens.spec.head_edits import PruneHead

CLEAN, CORRUPT = "Compute: 12+30=", "Compute: 13+30="
# the output projection, whose input is the heads' outputs (head-major), written out by hand
O_PROJ = {"gpt2": "transformer.h.{l}.attn.c_proj", "llama": "model.layers.{l}.self_attn.o_proj"}
H, DH = 2, 16          # tiny models: hidden 32, 2 query heads (Llama: 1 key/value head)


def lm64(arch):
    m = tiny.lm(arch)
    m.hf.double()
    return m


def seq(m, text):
    return m.tokenizer(text)["input_ids"]


def cols(h):
    return slice(h * DH, (h + 1) * DH)


def plain_ld(hf, ids, hooks=()):
    """logit('4') - logit('5') at the last position, with plain pre-hooks
    ``{module path: fn(input) -> input}`` on the output projections."""
    hs = [hf.get_submodule(p).register_forward_pre_hook(
        lambda mod, a, fn=fn: (fn(a[0].clone()),) + tuple(a[1:])) for p, fn in hooks]
    try:
        with torch.no_grad():
            lg = hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    finally:
        for h in hs:
            h.remove()
    tok = hf_tok()
    return float(lg[tok("4")] - lg[tok("5")])


def hf_tok():
    t = tiny.tokenizer()
    return lambda s: t(s, add_special_tokens=False)["input_ids"][0]


def z_in(hf, arch, ids, layer):
    """The output projection's input of a plain run: [tokens, heads * d_head]."""
    got = {}
    h = hf.get_submodule(O_PROJ[arch].format(l=layer)).register_forward_pre_hook(
        lambda mod, a: got.__setitem__("z", a[0][0].detach().clone()))
    with torch.no_grad():
        hf(input_ids=torch.tensor([ids]), use_cache=False)
    h.remove()
    return got["z"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_exact_head_patching_equals_plain_hooks(arch):
    m = lm64(arch)
    ids, cids = seq(m, CLEAN), seq(m, CORRUPT)
    base = plain_ld(m.hf, ids)
    for corrupt, ablate in ((CORRUPT, None), (None, "zero")):
        res = attribute(m, CLEAN, "42", "52", corrupt=corrupt, ablate=ablate, method="exact",
                        sites="blocks.*.attn.hook_z", per="head")
        assert res.unit == "head" and res.sites == ["blocks.0.attn.hook_z",
                                                    "blocks.1.attn.hook_z"]
        assert res.matrix().shape == (2, H)                       # layer x head
        for layer in range(2):
            path = O_PROJ[arch].format(l=layer)
            zc = z_in(m.hf, arch, cids, layer) if corrupt else None
            for h in range(H):
                def patch(x, h=h, zc=zc):
                    x[0, :, cols(h)] = 0.0 if zc is None else zc[:, cols(h)]
                    return x
                want = base - plain_ld(m.hf, ids, [(path, patch)])
                got = res.effects[f"blocks.{layer}.attn.hook_z"][h]
                assert got == pytest.approx(want, abs=1e-9), (corrupt, layer, h)
        assert res.clean == pytest.approx(base, abs=1e-9)
    assert np.abs(res.matrix()).max() > 1e-3                         # the heads matter


@pytest.mark.parametrize("method", ["gradxact", "attribution"])
def test_gradient_head_scores_sum_the_slice(method):
    """Hand-written autograd at the output projection's input: the head's effect is
    sum over tokens and its d_head columns of (z - z_corrupted) * d metric / d z."""
    m = lm64("gpt2")
    ids, cids = seq(m, CLEAN), seq(m, CORRUPT)
    t = hf_tok()
    leaves = {}

    def make(layer):
        def hook(mod, a):                 # kept in the graph: layer 0 also acts through 1
            x = a[0] + 0.0 if a[0].requires_grad else a[0].detach().clone().requires_grad_()
            leaves[layer] = x
            return (x,) + tuple(a[1:])
        return hook
    hs = [m.hf.get_submodule(O_PROJ["gpt2"].format(l=i)).register_forward_pre_hook(make(i))
          for i in range(2)]
    with torch.enable_grad():
        lg = m.hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        ld = lg[t("4")] - lg[t("5")]
        grads = torch.autograd.grad(ld, [leaves[0], leaves[1]])
    for h in hs:
        h.remove()
    res = attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, method=method,
                    sites="blocks.*.attn.hook_z", per="head")
    for layer in range(2):
        z = leaves[layer].detach()[0]
        base = z if method == "gradxact" else z - z_in(m.hf, "gpt2", cids, layer)
        term = base * grads[layer][0]                               # [tokens, H * DH]
        for h in range(H):
            want = float(term[:, cols(h)].sum())
            assert res.effects[f"blocks.{layer}.attn.hook_z"][h] == pytest.approx(want,
                                                                                   abs=1e-9)
        per_tok = res.per_token(f"blocks.{layer}.attn.hook_z")
        assert per_tok.shape == (len(ids), H)
        np.testing.assert_allclose(per_tok[:, 1], term[:, cols(1)].sum(1).numpy(), atol=1e-9)


def test_verify_and_prune_head_edits():
    m = lm64("gpt2")
    res = attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, sites="blocks.*.attn.hook_z",
                    per="head", verify=2)
    ex = attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, sites="blocks.*.attn.hook_z",
                   per="head", method="exact")
    for v in res.verified:
        assert v["exact"] == pytest.approx(ex.effects[v["site"]][v["head"]], abs=1e-9)
    edits = res.as_edits(2)
    assert all(isinstance(op, PruneHead) for op in edits)
    assert {(op.site, h) for op in edits for h in op.heads} == {(s, n) for s, n, _ in
                                                                res.top(2)}
    assert "L" in res.summary(2) and ".H" in res.summary(2)
    # the pruned heads, by hand: their c_proj input columns zeroed
    hooks = []
    for op in edits:
        layer = int(op.site.split(".")[1])

        def zero(x, hs=tuple(op.heads)):
            for h in hs:
                x[0, :, cols(h)] = 0.0
            return x
        hooks.append((O_PROJ["gpt2"].format(l=layer), zero))
    assert metric(m, CLEAN, "42", "52", edits=edits) == pytest.approx(
        plain_ld(m.hf, seq(m, CLEAN), hooks), abs=1e-9)


def cli(args, capsys):
    code = main(["attribute", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_per_head(tiny_dirs, tmp_path, capsys):
    path = tmp_path / "heads.json"
    base = ["-m", str(tiny_dirs["llama"]), "--prompt", CLEAN, "--answer", "42", "--contrast",
            "52"]
    code, out, err = cli(base + ["--site", "blocks.*.attn.hook_z", "--per", "head",
                                 "--method", "exact", "--ablate", "zero", "--top", "3",
                                 "--as-edits", str(path), "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["per"] == "head" and len(d["top"]) == 3
    assert all(t["label"].startswith("L") and ".H" in t["label"] for t in d["top"])
    edits = EditSet.load(path)
    assert [op.op for op in edits] and all(op.op == "prune_head" for op in edits)
    assert sorted((op.site, h) for op in edits for h in op.heads) == \
        sorted((t["site"], t["head"]) for t in d["top"])
    # bad input: one line, exit 2
    for extra, words in ((["--site", "blocks.0.attn.hook_z"], ["holds attention heads",
                                                                "--per head"]),
                         (["--site", "blocks.0.mlp.hook_post", "--per", "head"],
                          ["no attention heads", "hook_z"])):
        code, out, err = cli(base + extra, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        for w in words:
            assert w in err


def test_head_index_out_of_range_names_the_head_counts():
    from neurolens.errors import InputError
    m = tiny.lm("llama")
    with pytest.raises(InputError, match=r"head 2 out of range.*2 query heads.*1 key/value"):
        attribute(m, CLEAN, "42", "52", method="exact", ablate="zero",
                  sites="blocks.0.attn.hook_z", per="head",
                  neurons={"blocks.0.attn.hook_z": [2]})
