"""Causal neuron scores (issue 27): exact patching against a hand-made hook on plain transformers,
gradient x activation against finite differences, attribution patching against exact patching
where the metric is linear, the metric's tokenization rule, hook cleanup and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import tiny
from native_sites import PlainReader, module, native

from neurolens.cli import main
from neurolens.engine.attribution import attribute, metric, patch_blocks
from neurolens.spec.edits import EditSet, Prune, Scale

CLEAN, CORRUPT = "Compute: 12+30=", "Compute: 13+30="


def lm64(arch: str):
    m = tiny.lm(arch)
    m.hf.double()
    return m


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def plain_logits(hf, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_ids=torch.tensor([seq]), use_cache=False).logits[0]


class Overwrite:
    """A plain forward (pre-)hook at the hard-coded module path of ``kind`` that edits the
    activation of ``neuron`` with ``fn(current) -> new`` (the fused half cut out by hand)."""

    def __init__(self, hf, arch, kind, layer, neuron, fn):
        path, io, half = native(arch, kind, layer)
        col = neuron if half is None else half[0] * (hf.config.intermediate_size) + neuron
        self.mod, self.io, self.col, self.fn = module(hf, path), io, col, fn

    def _edit(self, x):
        x = x.clone()
        x3 = x if x.ndim == 3 else x[None]
        x3[..., self.col] = self.fn(x3[..., self.col])
        return x

    def __enter__(self):
        if self.io == "output":
            self.h = self.mod.register_forward_hook(lambda m, a, o: self._edit(o))
        else:
            self.h = self.mod.register_forward_pre_hook(
                lambda m, a: (self._edit(a[0]),) + tuple(a[1:]))
        return self

    def __exit__(self, *exc):
        self.h.remove()


def logit_diff(logits, good: int, bad: int) -> float:
    return float(logits[-1, good] - logits[-1, bad])


@pytest.mark.parametrize("arch,kind", [("gpt2", "mlp.hook_post"), ("opt", "mlp.hook_post"),
                                       ("llama", "mlp.hook_pre"), ("phi3", "mlp.hook_pre")])
def test_exact_patching_equals_a_hand_made_hook(arch, kind):
    m = lm64(arch)
    tok, hf = m.tokenizer, m.hf
    site, neurons = f"blocks.1.{kind}", [3, 17]
    res = attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, sites=site, method="exact",
                    neurons={site: neurons})
    good, bad = ids(tok, "4")[0], ids(tok, "5")[0]
    clean_ids, corr_ids = ids(tok, CLEAN), ids(tok, CORRUPT)
    n_tok = len(clean_ids)
    with PlainReader(hf, arch, {"a": (kind, 1)},
                     batch_seq=lambda: (1, n_tok)) as r, torch.no_grad():
        hf(input_ids=torch.tensor([corr_ids]), use_cache=False)
    corr = r.calls["a"][0][0].double()                           # [tokens, width]
    m_clean = logit_diff(plain_logits(hf, clean_ids), good, bad)
    assert res.clean == pytest.approx(m_clean, abs=1e-9)
    assert res.corrupted == pytest.approx(logit_diff(plain_logits(hf, corr_ids), good, bad),
                                          abs=1e-9)
    for n in neurons:
        with Overwrite(hf, arch, kind, 1, n, lambda cur, n=n: corr[:, n].to(cur.dtype)):
            m_patched = logit_diff(plain_logits(hf, clean_ids), good, bad)
        assert abs(res.effects[site][n] - (m_clean - m_patched)) < 1e-6
    assert np.isnan(res.effects[site][0])                        # not asked for
    assert abs(res.effects[site][3] - res.effects[site][17]) > 1e-9   # not one number twice


# float64 end to end: the Llama family's RMSNorm computes in float32 whatever the weights' dtype,
# too coarse for a finite difference (hand-written autograd checks those below)
@pytest.mark.parametrize("arch,kind", [("gpt2", "mlp.hook_post"), ("gpt2", "mlp.hook_pre"),
                                       ("gpt_neox", "mlp.hook_post")])
def test_gradient_times_activation_equals_finite_differences(arch, kind):
    m = lm64(arch)
    tok, hf = m.tokenizer, m.hf
    site = f"blocks.0.{kind}"
    res = attribute(m, CLEAN, "42", sites=site, method="gradxact")   # log p("42")
    seq = ids(tok, CLEAN) + ids(tok, "4")
    a, b = ids(tok, "4")[0], ids(tok, "2")[0]

    def logp(logits):
        lp = torch.log_softmax(logits, -1)
        return float(lp[-2, a] + lp[-1, b])
    assert res.clean == pytest.approx(logp(plain_logits(hf, seq)), abs=1e-9)
    eps = 1e-4
    top = [n for _, n, _ in res.top(4)]
    for n in top:
        vals = []
        for s in (1 + eps, 1 - eps):
            with Overwrite(hf, arch, kind, 0, n, lambda cur, s=s: cur * s):
                vals.append(logp(plain_logits(hf, seq)))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert fd == pytest.approx(res.effects[site][n], rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("arch,kind", [("phi3", "mlp.hook_pre"), ("phi3", "mlp.hook_pre_linear"),
                                       ("llama", "mlp.hook_post"), ("opt", "mlp.hook_post")])
def test_gradient_times_activation_equals_hand_written_autograd(arch, kind):
    """The fused half (Phi-3's gate_up_proj), the gated MLP and OPT's 2-D tensors: a plain hook
    at the hard-coded module keeps the tensor, torch.autograd gives its gradient."""
    m = lm64(arch)
    tok, hf = m.tokenizer, m.hf
    site = f"blocks.0.{kind}"
    res = attribute(m, CLEAN, "42", "52", sites=site, method="gradxact")
    path, io, half = native(arch, kind, 0)
    kept = []

    def keep(x):
        x = x if x.requires_grad else x.requires_grad_()
        kept.append(x)
    mod = module(hf, path)
    h = (mod.register_forward_hook(lambda mo, a, o: keep(o)) if io == "output" else
         mod.register_forward_pre_hook(lambda mo, a: keep(a[0])))
    try:
        logits = hf(input_ids=torch.tensor([ids(tok, CLEAN)]), use_cache=False).logits[0]
    finally:
        h.remove()
    md = logits[-1, ids(tok, "4")[0]] - logits[-1, ids(tok, "5")[0]]
    (g,) = torch.autograd.grad(md, kept)
    x = kept[0].detach()
    if half is not None:
        w = x.shape[-1] // half[1]
        x, g = x[..., half[0] * w:(half[0] + 1) * w], g[..., half[0] * w:(half[0] + 1) * w]
    ref = (x * g).reshape(-1, x.shape[-1]).sum(0).numpy()
    np.testing.assert_allclose(res.effects[site], ref, rtol=1e-7, atol=1e-12)
    assert np.abs(ref).max() > 1e-4


def test_attribution_patching_equals_exact_patching_for_a_linear_metric():
    m = lm64("gpt2")
    m.hf.transformer.ln_f = torch.nn.Identity()    # logits now linear in the last FFN's neurons
    site = "blocks.1.mlp.hook_post"
    kw = dict(corrupt=CORRUPT, sites=site)
    atp = attribute(m, CLEAN, "42", "52", method="attribution", **kw)
    ex = attribute(m, CLEAN, "42", "52", method="exact", **kw)
    np.testing.assert_allclose(atp.effects[site], ex.effects[site], rtol=1e-7, atol=1e-13)
    assert np.abs(ex.effects[site]).max() > 1e-5
    # the model's own entry point is the same call
    np.testing.assert_array_equal(m.attribute(CLEAN, "42", "52", **kw).effects[site],
                                  atp.effects[site])
    # per position too, and the sum over positions is the total
    per = atp.per_token(site)
    assert per.shape == (len(ids(m.tokenizer, CLEAN)), 64)
    np.testing.assert_allclose(per.sum(0), atp.effects[site], atol=1e-12)
    at5 = attribute(m, CLEAN, "42", "52", method="exact", position=5, **kw)
    np.testing.assert_allclose(at5.effects[site], per[5], rtol=1e-7, atol=1e-13)
    # a block of neurons patched together adds up (linear), and a zero patch is a prune
    blk = patch_blocks(m, CLEAN, "42", "52", blocks=[(site, [1, 2, 3])], corrupt=CORRUPT)
    assert blk[0] == pytest.approx(ex.effects[site][[1, 2, 3]].sum(), abs=1e-9)
    zero = attribute(m, CLEAN, "42", "52", method="exact", ablate="zero", sites=site,
                     neurons={site: [7]})
    pruned = metric(m, CLEAN, "42", "52", edits=EditSet([Prune(site, [7])]))
    assert zero.effects[site][7] == pytest.approx(zero.clean - pruned, abs=1e-9)


def test_metric_tokenization_rule_first_differing_token_teacher_forced():
    m = tiny.lm("gpt2")
    tok, hf = m.tokenizer, m.hf
    p = "Compute: 40+45="
    t = {c: ids(tok, c)[0] for c in "4578"}
    # 85 vs 84: the same first token; the run reads the prompt and "8", scores the second
    lg = plain_logits(hf, ids(tok, p) + [t["8"]])
    assert metric(m, p, "85", "84") == pytest.approx(logit_diff(lg, t["5"], t["4"]), abs=1e-5)
    # 85 vs 75: they differ at once; the prompt alone
    lg = plain_logits(hf, ids(tok, p))
    assert metric(m, p, "85", "75") == pytest.approx(logit_diff(lg, t["8"], t["7"]), abs=1e-5)
    # log-probability of "85": summed over its two tokens, teacher-forced
    lp = torch.log_softmax(plain_logits(hf, ids(tok, p) + [t["8"]]), -1)
    assert metric(m, p, "85") == pytest.approx(float(lp[-2, t["8"]] + lp[-1, t["5"]]), abs=1e-5)
    # averaged over a prompt set (prompts of different lengths)
    both = metric(m, [p, "Compute: 4+45="], "85", "84")
    one = metric(m, "Compute: 4+45=", "85", "84")
    assert both == pytest.approx((metric(m, p, "85", "84") + one) / 2, abs=1e-6)


def hooks_left(hf) -> int:
    return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in hf.modules())


def test_hooks_are_gone_after_runs_and_after_an_exception(monkeypatch):
    m = tiny.lm("gpt2")
    seq = ids(m.tokenizer, CLEAN)
    before = plain_logits(m.hf, seq)
    for method in ("attribution", "gradxact", "exact"):
        attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, method=method, verify=3)
        assert hooks_left(m.hf) == 0
    attribute(m, CLEAN, "42", ablate="mean", mean_prompts=["a b c", "hello"])
    assert hooks_left(m.hf) == 0

    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(m.hf.transformer.ln_f, "forward", boom)
    for method in ("attribution", "exact"):
        with pytest.raises(RuntimeError, match="boom"):
            attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, method=method)
        assert hooks_left(m.hf) == 0
    monkeypatch.undo()
    assert torch.equal(plain_logits(m.hf, seq), before)
    assert torch.is_grad_enabled()


def cli(args, capsys):
    code = main(["attribute", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("extra,words", [
    (["--corrupt", "Compute: 123+30="], ["16 tokens", "15", "mean or zero"]),
    (["--answer", ""], ["tokenizes to nothing"]),
    (["--contrast", ""], ["tokenizes to nothing"]),
    (["--site", "blocks.0.hook_resid_post"], ["not a neuron site"]),
])
def test_cli_bad_input_one_line_exit_2(tiny_dirs, capsys, extra, words):
    base = ["-m", str(tiny_dirs["gpt2"]), "--prompt", CLEAN, "--answer", "42"]
    code, out, err = cli(base + extra, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err


def test_cli_top_k_as_edits_and_capture_file(tiny_dirs, tmp_path, capsys):
    from safetensors import safe_open
    edits_path, out_path = tmp_path / "top.json", tmp_path / "eff.safetensors"
    code, out, err = cli(["-m", str(tiny_dirs["gpt2"]), "--prompt", CLEAN, "--answer", "42",
                          "--contrast", "52", "--corrupt", CORRUPT, "--top", "5", "--verify",
                          "--as-edits", str(edits_path), "--out", str(out_path), "--json"],
                         capsys)
    assert code == 0, err
    d = json.loads(out)
    assert len(d["top"]) == 5 and len(d["verified"]) == 5 and d["corruption"] == "prompts"
    edits = EditSet.load(edits_path)
    assert sum(len(op.neurons) for op in edits) == 5
    assert {(op.site, n) for op in edits for n in op.neurons} == \
        {(t["site"], t["neuron"]) for t in d["top"]}
    from neurolens.engine.loading import load
    m = load(str(tiny_dirs["gpt2"]))
    assert m.check_edits(edits) == []
    base, pruned = metric(m, CLEAN, "42", "52"), metric(m, CLEAN, "42", "52", edits=edits)
    assert base == pytest.approx(d["clean"], abs=1e-5)
    assert abs(pruned - base) > 1e-4
    with safe_open(str(out_path), framework="numpy") as f:
        meta = f.metadata()
        a = f.get_tensor("blocks.1.mlp.hook_post/0")
    assert meta["format"] == "neurolens.capture/1"
    assert json.loads(meta["attribution"])["method"] == "attribution"
    assert a.shape == (len(json.loads(meta["tokens"])[0]), 64)


def test_cli_prompt_files_exact_and_mean_ablation(tiny_dirs, tmp_path, capsys):
    """--prompts JSONL with answers, --corrupt-prompts, --method exact on a pattern; then the
    mean ablation over --mean-prompts equals an exact patch with a hand-computed mean."""
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps({"prompt": p, "answer": a}) for p, a in
                               [(CLEAN, "42"), ("Compute: 1+30=", "31")]) + "\n")
    corrupt = tmp_path / "corrupt.txt"
    corrupt.write_text(f"{CORRUPT}\nCompute: 2+30=\n")
    base = ["-m", str(tiny_dirs["gpt2"]), "--prompts", str(clean), "--json"]
    code, out, err = cli(base + ["--corrupt-prompts", str(corrupt), "--method", "exact",
                                 "--site", "blocks.*.mlp.hook_post", "--top", "3"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["method"] == "exact" and d["metric"] == "logprob" and d["prompts"] == 2
    assert len(d["top"]) == 3 and d["clean"] != d["corrupted"]
    means = tmp_path / "means.txt"
    means.write_text("hello world\nab\n")
    code, out, err = cli(base + ["--ablate", "mean", "--mean-prompts", str(means), "--method",
                                 "exact", "--site", "blocks.0.mlp.hook_post", "--top", "1"],
                         capsys)
    assert code == 0, err
    d = json.loads(out)
    from neurolens.engine.loading import load
    m = load(str(tiny_dirs["gpt2"]))
    rows = [PlainReader(m.hf, "gpt2", {"a": ("mlp.hook_post", 0)}) for _ in range(2)]
    acts = []
    for r, text in zip(rows, ["hello world", "ab"]):
        with r, torch.no_grad():
            m.hf(input_ids=torch.tensor([ids(m.tokenizer, text)]))
        acts.append(r.calls["a"][0][0])
    mean = torch.cat(acts).mean(0)
    (top,) = d["top"]
    n = top["neuron"]
    seq = [ids(m.tokenizer, p) + ids(m.tokenizer, a)[:-1] for p, a in [(CLEAN, "42"),
                                                                        ("Compute: 1+30=", "31")]]
    effects = []
    for s, a in zip(seq, ["42", "31"]):
        t = ids(m.tokenizer, a)

        def lp(logits, t=t):
            return float(torch.log_softmax(logits, -1)[-2:][[0, 1], t].sum())
        before = lp(plain_logits(m.hf, s))
        with Overwrite(m.hf, "gpt2", "mlp.hook_post", 0, n,
                       lambda cur: torch.full_like(cur, float(mean[n]))):
            effects.append(before - lp(plain_logits(m.hf, s)))
    assert top["effect"] == pytest.approx(np.mean(effects), abs=1e-5)


def test_cli_mean_ablation_defaults_to_the_probe_split(tiny_dirs, tmp_path, capsys):
    """A JSONL prompts file with splits: the mean ablation averages over its probe rows (the
    same numbers as --mean-prompts with those rows by hand), and says so."""
    rows = [(CLEAN, "42", "eval"), ("Compute: 1+30=", "31", "eval"),
            ("hello world", "x", "probe"), ("ab", "y", "probe")]
    clean = tmp_path / "skill.jsonl"
    clean.write_text("\n".join(json.dumps({"prompt": p, "answer": a, "skill": "s",
                                           "split": s}) for p, a, s in rows) + "\n")
    means = tmp_path / "means.txt"
    means.write_text("hello world\nab\n")
    base = ["-m", str(tiny_dirs["gpt2"]), "--prompts", str(clean), "--json", "--method",
            "exact", "--site", "blocks.0.mlp.hook_post", "--top", "3"]
    code, out, err = cli(base, capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["mean_over"] == "the probe split of skill.jsonl (2 prompts)"
    code, out2, err = cli(base + ["--mean-prompts", str(means)], capsys)
    assert code == 0, err
    d2 = json.loads(out2)
    assert [t["effect"] for t in d["top"]] == pytest.approx([t["effect"] for t in d2["top"]])
    code, out3, err = cli(base + ["--ablate", "zero"], capsys)
    assert code == 0 and "mean_over" not in json.loads(out3)


#: the query projection's weight (hard-coded per architecture)
QUERY = {"gpt2": "transformer.h.{l}.attn.c_attn.weight",
         "llama": "model.layers.{l}.self_attn.q_proj.weight"}


class WeightUses(TorchFunctionMode):
    """Counts the matrix products with each of the given parameters (a module that does not
    run does not multiply by its weights)."""

    def __init__(self, params: dict):
        super().__init__()
        self.params, self.n = params, dict.fromkeys(params, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for k, p in self.params.items():
            if getattr(func, "__name__", "") in ("linear", "addmm", "matmul", "mm") and \
                    any(a is p for a in (*args, *kwargs.values())):
                self.n[k] += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_exact_patching_starts_from_the_clean_run(arch):
    """Patched forwards reuse the clean run up to the patched site (block 0, and block 1's
    attention and FFN input projection, are not computed again for a block-1 site), and the
    effects still equal hand-made hooks, with a model edit on the output of a skipped block (a
    scale: applied twice, or not at all, it would move the numbers)."""
    m = lm64(arch)
    tok, hf = m.tokenizer, m.hf
    m.sites()                                   # the width probe runs a forward of its own
    s0, s1 = "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"
    edits = EditSet([Scale("blocks.0.hook_resid_post", [2, 5], 1.5)])
    weight = {"attn0": QUERY[arch].format(l=0), "attn1": QUERY[arch].format(l=1),
              "down0": native(arch, "mlp.hook_post", 0)[0] + ".weight",
              "pre1": native(arch, "mlp.hook_pre", 1)[0] + ".weight"}
    with WeightUses({k: hf.get_parameter(p) for k, p in weight.items()}) as uses:
        res = attribute(m, CLEAN, "42", "52", corrupt=CORRUPT, sites=[s0, s1], method="exact",
                        neurons={s0: [3], s1: [3, 17]}, edits=edits)
    # the corrupted and the clean run, then one patched forward per start block: block 0's
    # rows run block 0's FFN and block 1; block 1's rows run only block 1's FFN output side
    assert uses.n == {"attn0": 2, "attn1": 3, "down0": 3, "pre1": 3}

    def scale(mo, a, o):
        x = o[0] if isinstance(o, tuple) else o
        x = x.clone()
        x[..., [2, 5]] *= 1.5
        return (x,) + tuple(o[1:]) if isinstance(o, tuple) else x
    good, bad = ids(tok, "4")[0], ids(tok, "5")[0]
    edit = module(hf, native(arch, "hook_resid_post", 0)[0]).register_forward_hook(scale)
    try:
        with PlainReader(hf, arch, {0: ("mlp.hook_post", 0), 1: ("mlp.hook_post", 1)}) as r, \
                torch.no_grad():
            hf(input_ids=torch.tensor([ids(tok, CORRUPT)]), use_cache=False)
        m_clean = logit_diff(plain_logits(hf, ids(tok, CLEAN)), good, bad)
        assert res.clean == pytest.approx(m_clean, abs=1e-9)
        for layer, n in ((0, 3), (1, 3), (1, 17)):
            corr = r.calls[layer][0][0].double()
            with Overwrite(hf, arch, "mlp.hook_post", layer, n,
                           lambda cur, n=n, c=corr: c[:, n].to(cur.dtype)):
                m_patched = logit_diff(plain_logits(hf, ids(tok, CLEAN)), good, bad)
            got = res.effects[f"blocks.{layer}.mlp.hook_post"][n]
            assert abs(got - (m_clean - m_patched)) < 1e-6
            assert abs(got) > 1e-6
    finally:
        edit.remove()
    assert hooks_left(hf) == 0
    assert not any("forward" in vars(mo) for mo in hf.modules())     # forwards restored
