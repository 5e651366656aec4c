"""Diffusion capture checked against a reference that is not neurolens' own code.

The reference is a plain torch ``register_forward_pre_hook`` on each UNet FFN's output linear
(``...transformer_blocks.0.ff.net.2``, module paths hard-coded below, read once from
``unet.named_modules()`` of the tiny pipeline) during a plain diffusers ``pipeline(...)`` call
with the same prompts, per-prompt seeds, steps and guidance scale. With classifier-free guidance
diffusers runs the UNet on ``torch.cat([uncond, cond])``, so the conditional rows, which
neurolens captures, are the second half of the batch; a run without guidance confirms which half
is the conditional one without relying on that order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.store.capture_store import CaptureStore

STEPS = 4
GUIDANCE = 3.0
PROMPTS = ["a handwritten digit 3", "exhibit 7"]
SEEDS = [5, 9]
N = len(PROMPTS)

#: site -> (module path of ff.net.2 inside the UNet, width = its in_features, spatial tokens),
#: in data-flow order (down blocks, mid block, up blocks). 16x16 latents; the mid block is 8x8.
SITES = {
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.hook_post":
        ("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2", 128, 256),
    "unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post":
        ("mid_block.attentions.0.transformer_blocks.0.ff.net.2", 256, 64),
    "unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.hook_post":
        ("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", 128, 256),
    "unet.up_blocks.1.attentions.1.transformer_blocks.0.ff.hook_post":
        ("up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2", 128, 256),
}
ALIASES = {
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.hook_post": "down0.a0.t0",
    "unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post": "mid.a0.t0",
    "unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.hook_post": "up1.a0.t0",
    "unet.up_blocks.1.attentions.1.transformer_blocks.0.ff.hook_post": "up1.a1.t0",
}
REDUCE = {"mean": lambda x: x.mean(1), "max": lambda x: x.max(1), "tokens": lambda x: x}


def _plain_ff_inputs(pipe, guidance: float) -> dict:
    """Run plain ``pipe(...)`` with forward-pre-hooks on every ff.net.2; return per module path
    the inputs [steps, batch, tokens, width] in call order, and the UNet's input batch sizes."""
    calls: list[int] = []
    seen: dict[str, list] = {path: [] for path, _, _ in SITES.values()}

    def on_unet(mod, args):
        calls.append(int(args[0].shape[0]))

    def on_ff(path):
        def hook(mod, args):
            # which UNet call (= denoising step) this input belongs to
            seen[path].append((len(calls) - 1, args[0].detach().float().cpu().numpy().copy()))
        return hook

    handles = [pipe.unet.register_forward_pre_hook(on_unet)]
    handles += [pipe.unet.get_submodule(path).register_forward_pre_hook(on_ff(path))
                for path in seen]
    try:
        gens = [torch.Generator().manual_seed(s) for s in SEEDS]
        pipe(PROMPTS, num_inference_steps=STEPS, guidance_scale=guidance, generator=gens,
             output_type="latent")                        # the VAE is not needed here
    finally:
        for h in handles:
            h.remove()
    out = {}
    for path, rows in seen.items():
        # exactly one input per UNet call, in step order
        assert [k for k, _ in rows] == list(range(STEPS)), path
        out[path] = np.stack([a for _, a in rows])
    return {"ff": out, "batch": calls}


@pytest.fixture(scope="module")
def dm(tiny_pipeline_dir):
    return nl.load(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def plain(tiny_pipeline_dir):
    """The plain diffusers pipeline (its own copy of the weights), hooked by hand."""
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(str(tiny_pipeline_dir))
    pipe.set_progress_bar_config(disable=True)
    return {"cfg": _plain_ff_inputs(pipe, GUIDANCE), "nocfg": _plain_ff_inputs(pipe, 1.0)}


def test_site_names_map_to_the_hard_coded_diffusers_modules(dm):
    assert list(dm.sites()) == list(SITES)                      # every site, in data-flow order
    assert dm.sites() == {s: w for s, (_, w, _) in SITES.items()}
    assert dm.aliases() == ALIASES
    for site, (path, width, _) in SITES.items():
        lin = dm.pipe.unet.get_submodule(path)
        assert isinstance(lin, torch.nn.Linear) and lin.in_features == width
        assert dm.resolve(site).module is lin
        assert dm.canonical(ALIASES[site]) == site
        assert dm.resolve(ALIASES[site]).module is lin


def test_reference_batches_are_uncond_then_cond(plain):
    """The plain run's UNet batches: 2n rows with guidance, n without; and the second half of
    the guided batch is the conditional one: at step 0 (same seeds, so the same latents) it
    equals the unguided run, which has only conditional rows, and the first half does not."""
    assert plain["cfg"]["batch"] == [2 * N] * STEPS
    assert plain["nocfg"]["batch"] == [N] * STEPS
    for path, width, tokens in SITES.values():
        cfg, nocfg = plain["cfg"]["ff"][path], plain["nocfg"]["ff"][path]
        assert cfg.shape == (STEPS, 2 * N, tokens, width)
        assert nocfg.shape == (STEPS, N, tokens, width)
        np.testing.assert_allclose(cfg[0, N:], nocfg[0], atol=1e-5, rtol=0)
        assert np.abs(cfg[0, :N] - nocfg[0]).max() > 1e-2


@pytest.mark.parametrize("reduce", ["mean", "max", "tokens"])
def test_capture_per_step_equals_plain_pre_hook_cond_half(dm, plain, reduce):
    store = CaptureStore(stats=False)
    cap = dm.capture(PROMPTS, "*", reduce=reduce, steps=STEPS, guidance=GUIDANCE, seed=SEEDS,
                     store=store)
    assert cap.keys() == list(SITES)
    for site, (path, width, tokens) in SITES.items():
        ref = plain["cfg"]["ff"][path]                           # [steps, 2n, tokens, width]
        for i in range(N):
            cond = REDUCE[reduce](ref[:, N + i])                 # prompt i, conditional half
            uncond = REDUCE[reduce](ref[:, i])
            got = cap[site][i]
            assert got.shape == ((STEPS, tokens, width) if reduce == "tokens"
                                 else (STEPS, width))
            np.testing.assert_allclose(got, cond, atol=1e-5, rtol=0,
                                       err_msg=f"{site} prompt {i}")
            # the test can tell the halves, the prompts and the steps apart
            assert np.abs(got - uncond).max() > 1e-3
            assert np.abs(got - REDUCE[reduce](ref[:, N + 1 - i])).max() > 1e-3
            assert np.abs(got[1:] - got[:-1]).max() > 1e-3
            # the store's per-step rows (what the GUI reads) carry the right step numbers
            assert store.steps(site, i) == list(range(STEPS))
            for k in range(STEPS):
                np.testing.assert_allclose(store.rows(site, i, step=k).reshape(cond[k].shape),
                                           cond[k], atol=1e-5, rtol=0)


def test_mean_is_over_spatial_tokens_not_channels_or_batch(dm, plain):
    """Concrete numbers for the mid block: the mean capture equals the per-step token mean of
    the plain hook, and not the max, nor the mean over both halves."""
    site, (path, width, tokens) = next((s, v) for s, v in SITES.items() if "mid_block" in s)
    ref = plain["cfg"]["ff"][path]
    cap = dm.capture(PROMPTS[1], site, reduce="mean", steps=STEPS, guidance=GUIDANCE,
                     seed=SEEDS[1:])
    got = cap[site][0]
    # one prompt alone has its own batch [uncond, cond]; same seed, so the same latents
    expect = ref[:, N + 1].sum(1) / tokens
    np.testing.assert_allclose(got, expect, atol=1e-5, rtol=0)
    assert np.abs(got - ref[:, N + 1].max(1)).max() > 1e-2
    assert np.abs(got - ref[:, [1, N + 1]].mean((1, 2))).max() > 1e-3


def test_capture_without_guidance_equals_the_plain_unguided_run(dm, plain):
    cap = dm.capture(PROMPTS, "*", reduce="tokens", steps=STEPS, guidance=1.0, seed=SEEDS)
    for site, (path, _, _) in SITES.items():
        ref = plain["nocfg"]["ff"][path]
        for i in range(N):
            np.testing.assert_allclose(cap[site][i], ref[:, i], atol=1e-5, rtol=0)
