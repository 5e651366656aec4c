"""Diffusion pipelines: a tiny config-built Stable Diffusion pipeline (random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neurolens as nl
from neurolens.engine.diffusion import DiffusionModel
from neurolens.engine.events import Cancelled, Failed, Finished, StepDone, drain
from neurolens.engine.hooks import CancelToken
from neurolens.errors import InputError, SpecError

STEPS = 4


@pytest.fixture(scope="module")
def dm(tiny_pipeline_dir):
    return nl.load(tiny_pipeline_dir)


def _hooks(model: DiffusionModel) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.unet.modules())


def _plain(pipe_or_dir, prompts, seeds, steps=STEPS, guidance=3.0):
    from diffusers import DiffusionPipeline
    pipe = (DiffusionPipeline.from_pretrained(str(pipe_or_dir))
            if not hasattr(pipe_or_dir, "unet") else pipe_or_dir)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                output_type="np").images


def test_load_recognises_pipeline_and_names_sites(dm):
    assert isinstance(dm, DiffusionModel)
    sites = dm.sites()
    assert len(sites) == 4
    assert all(s.startswith("unet.") and s.endswith(".ff.hook_post") for s in sites)
    # width = in_features of ff.net.2 (GEGLU inner dim = 4 x block channels)
    assert sites["unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post"] == 256
    aliases = dm.aliases()
    assert aliases["unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.hook_post"] \
        == "down0.a0.t0"
    assert dm.canonical("mid.a0.t0").startswith("unet.mid_block")
    with pytest.raises(InputError, match="unknown site"):
        dm.canonical("blocks.0.mlp.hook_post.x")


def test_denoising_loop_reproduces_the_plain_pipeline(dm):
    prompts = ["a handwritten digit 3", "exhibit 7"]
    ours = dm.generate(prompts, steps=STEPS, seed=[5, 9]).images
    ref = _plain(dm.pipe, prompts, [5, 9])
    assert ours.shape == ref.shape == (2, 16, 16, 1)
    assert np.abs(ours - ref).max() == 0.0
    # per-prompt seeds: an image does not depend on what else is in the batch
    alone = dm.generate(prompts[1:], steps=STEPS, seed=[9]).images
    assert np.abs(alone[0] - ours[1]).max() < 1e-5


def test_capture_per_step_shapes_and_hooks_removed(dm):
    cap = dm.capture(["a digit 1", "a digit 2"], sites="*", steps=STEPS, reduce="mean")
    for site, w in dm.sites().items():
        assert len(cap[site]) == 2
        assert cap[site][0].shape == (STEPS, w)
    # different steps see different activations (the timestep embedding changes)
    a = cap["unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post"][0]
    assert np.abs(a[0] - a[-1]).max() > 1e-4
    tok = dm.capture("a digit 1", sites="mid.a0.t0", steps=2, reduce="tokens")
    site = dm.canonical("mid.a0.t0")
    assert tok[site][0].shape == (2, 8 * 8, 256)   # 16x16 latents, mid block at 8x8
    # the mean reduction is the mean of the token rows
    mean = dm.capture("a digit 1", sites="mid.a0.t0", steps=2, reduce="mean")
    np.testing.assert_allclose(mean[site][0], tok[site][0].mean(1), atol=1e-5)
    assert _hooks(dm) == 0


def test_capture_saves_like_a_language_model_capture(dm, tmp_path):
    """One Capture type: a pipeline's capture saves itself (the step axis leads) in the same
    neurolens.capture/1 file as an LM's, read back with plain safetensors."""
    from safetensors import safe_open
    cap = dm.capture(["a digit 1", "a digit 2"], sites="mid.a0.t0", steps=3, reduce="max")
    site = dm.canonical("mid.a0.t0")
    path = cap.save(tmp_path / "c.safetensors")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        assert meta["format"] == "neurolens.capture/1" and meta["steps"] == "3"
        assert json.loads(meta["sites"]) == [site] and meta["reduce"] == "max"
        assert json.loads(meta["prompts"]) == ["a digit 1", "a digit 2"]
        for i in range(2):
            got = f.get_tensor(f"{site}/{i}")
            assert got.shape == (3, 256)
            np.testing.assert_array_equal(got, cap[site][i])


def test_cancel_stops_within_one_step_and_removes_hooks(dm):
    tok = CancelToken()
    seen = []
    from neurolens.store.capture_store import CaptureStore
    from neurolens.engine.diffusion import StepCapture
    store = CaptureStore()
    caps = {s: StepCapture(s, store) for s in dm.sites()}
    for ev in dm.denoise_events(["a digit 4"], steps=10, captures=caps, cancel=tok):
        seen.append(ev)
        if isinstance(ev, StepDone) and ev.step == 2:
            tok.cancel()
    assert isinstance(seen[-1], Cancelled) and seen[-1].at == 3
    assert _hooks(dm) == 0


def test_failed_run_removes_hooks(dm):
    def boom(x, state):
        raise RuntimeError("handler failed")
    site = next(iter(dm.sites()))
    evs = list(dm.denoise_events(["a digit 4"], steps=2, captures={site: boom}))
    assert isinstance(evs[-1], Failed) and "handler failed" in str(evs[-1].error)
    with pytest.raises(RuntimeError, match="handler failed"):
        drain(dm.denoise_events(["a digit 4"], steps=2, captures={site: boom}))
    assert _hooks(dm) == 0


def test_prune_changes_output_and_equals_zeroed_weights(dm):
    site = dm.canonical("mid.a0.t0")
    neurons = list(range(0, 256, 2))
    edits = nl.EditSet([nl.Prune(site, neurons)])
    cmp = dm.compare(["a digit 6"], edits, steps=STEPS, seed=1)
    assert max(cmp.mean_abs_diff()) > 1e-5
    # the same as zeroing those input columns of ff.net.2 by hand
    lin = dm.resolve(site).module
    saved = lin.weight.detach().clone()
    try:
        with torch.no_grad():
            lin.weight[:, neurons] = 0
        manual = dm.generate(["a digit 6"], steps=STEPS, seed=1).images
    finally:
        with torch.no_grad():
            lin.weight.copy_(saved)
    np.testing.assert_allclose(cmp.after, manual, atol=1e-6)
    assert np.abs(dm.generate(["a digit 6"], steps=STEPS, seed=1).images - cmp.before).max() == 0


def test_step_window_only_acts_inside(dm):
    site = dm.canonical("mid.a0.t0")
    full = nl.EditSet([nl.Prune(site, list(range(256)))])
    late = nl.EditSet([nl.Prune(site, list(range(256)), steps=(STEPS, STEPS + 5))])
    base = dm.generate("a digit 2", steps=STEPS, seed=2).images
    assert np.abs(dm.generate("a digit 2", edits=late, steps=STEPS, seed=2).images - base).max() \
        == 0.0
    assert np.abs(dm.generate("a digit 2", edits=full, steps=STEPS, seed=2).images - base).max() \
        > 1e-5


def test_language_model_ops_are_refused(dm):
    site = next(iter(dm.sites()))
    with pytest.raises(InputError, match="language models"):
        dm.check_edits(nl.EditSet([nl.TopK(site, 0.1)]))
    with pytest.raises(SpecError, match="out of range"):
        dm.check_edits(nl.EditSet([nl.Prune(site, [100000])]))


def test_weight_mask_export_reloads_in_plain_diffusers(dm, tmp_path):
    rng = np.random.default_rng(0)
    edits = []
    for site in dm.sites():
        w = dm.resolve(site).module.weight
        edits.append(nl.MaskWeights(site, (rng.random(tuple(w.shape)) < 0.2).astype(np.uint8)))
    edits.append(nl.Scale(dm.canonical("down0.a0.t0"), [1, 2, 3], factor=0.0))
    es = nl.EditSet(edits)
    # the spec round-trips through JSON + sidecar
    es.save(tmp_path / "e.json")
    es2 = nl.EditSet.load(tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["edits"][0]["op"] == "wmask"
    edited = dm.generate(["exhibit 3", "a digit 5"], edits=es2, steps=STEPS, seed=4).images
    base = dm.generate(["exhibit 3", "a digit 5"], steps=STEPS, seed=4).images
    assert np.abs(edited - base).max() > 1e-4
    report = dm.export(es2, tmp_path / "out")
    assert len(report.baked) == 5 and not report.sidecar
    assert "plain diffusers loads the folder" in report.summary()
    assert "Baked" in (tmp_path / "out" / "NEUROLENS.md").read_text()
    plain = _plain(tmp_path / "out", ["exhibit 3", "a digit 5"], [4, 5])
    np.testing.assert_allclose(plain, edited, atol=1e-5)
    # the loaded model's weights were never touched
    assert np.abs(dm.generate(["exhibit 3", "a digit 5"], steps=STEPS, seed=4).images
                  - base).max() == 0.0
    with pytest.raises(InputError, match="not empty"):
        dm.export(es2, tmp_path / "out")


def test_step_window_edits_export_as_sidecar_and_reapply(dm, tmp_path):
    site = dm.canonical("mid.a0.t0")
    es = nl.EditSet([nl.Prune(site, list(range(64)), steps=(0, 2))])
    edited = dm.generate("a digit 8", edits=es, steps=STEPS, seed=0).images
    report = dm.export(es, tmp_path / "side")
    assert report.sidecar and not report.baked
    again = nl.load(tmp_path / "side")
    np.testing.assert_allclose(again.generate("a digit 8", steps=STEPS, seed=0).images, edited,
                               atol=1e-6)


def test_events_stream_previews(dm):
    evs = list(dm.denoise_events(["a digit 0"], steps=3, preview=True))
    steps = [e for e in evs if isinstance(e, StepDone)]
    assert [e.step for e in steps] == [0, 1, 2]
    assert steps[0].preview.shape == (1, 16, 16, 1)
    assert isinstance(evs[-1], Finished)
    assert 0.0 <= evs[-1].result.images.min() and evs[-1].result.images.max() <= 1.0


# ----------------------------------------------------------------------------- memorization method
def test_wanda_contrast_masks_match_a_direct_computation(dm):
    from neurolens.methods import memorization as mz
    site = dm.canonical("mid.a0.t0")
    target, base = ["exhibit 101", "exhibit 202"], ["a digit 1", "a digit 2", "a digit 3"]
    tn = mz.column_norms(dm, target, tau=2, steps=STEPS)
    bn = mz.column_norms(dm, base, tau=2, steps=STEPS)
    assert sorted(tn[site]) == [0, 1]                      # only the first tau steps
    # direct: capture every spatial token of both CFG halves and normalise the rows
    from neurolens.engine.diffusion import StepCapture
    from neurolens.store.capture_store import CaptureStore
    store = CaptureStore(stats=False)
    cap = StepCapture(site, store, reduce="tokens", halves="both")
    # "both" keeps the whole batch: rows of prompt i hold [uncond_i; cond_i] stacked
    drain(dm.denoise_events(target, steps=STEPS, captures={site: cap}))
    rows = np.concatenate([store.rows(site, i, step=0).reshape(-1, 256) for i in range(2)])
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(tn[site][0], np.sqrt((rows ** 2).mean(0)), rtol=1e-4)
    masks = mz.masks_from_norms(dm, tn, bn, rho=0.05, tau=2)
    w = np.abs(dm.resolve(site).module.weight.detach().numpy())
    k = round(0.05 * 256)
    expect = np.zeros_like(w, dtype=bool)
    for t in (0, 1):
        st, sb = w * tn[site][t], w * bn[site][t]
        top = np.argsort(-st, axis=1)[:, :k]
        sel = np.zeros_like(expect)
        np.put_along_axis(sel, top, True, axis=1)
        expect |= sel & (st > sb)
    assert masks[site].shape == w.shape
    assert (masks[site] == expect).all() and masks[site].any()
    # at most k per row per step, so at most 2k per row after the union
    assert masks[site].sum(1).max() <= 2 * k
    # IoU over every site's cells: hand-made masks sharing 2 of 5 marked cells
    a = {"s": np.array([[1, 1, 0, 0]], bool), "t": np.array([[1, 0]], bool)}
    b = {"s": np.array([[0, 1, 1, 0]], bool), "t": np.array([[1, 1]], bool)}
    assert mz.iou(a, b) == pytest.approx(2 / 5)
    assert mz.iou({"s": np.zeros((1, 3), bool)}, {"s": np.zeros((1, 3), bool)}) == 0.0


def test_find_subspace_gives_a_bakeable_edit(dm, tmp_path):
    from neurolens.methods import memorization as mz
    res = mz.find_subspace(dm, ["exhibit 101", "exhibit 202"], ["a digit 1", "a digit 2"],
                           rho=0.05, tau=2, steps=STEPS)
    assert res.edits and all(op.op == "wmask" for op in res.edits)
    assert 0 < res.report["fraction"] < 0.1
    report = dm.export(res.edits, tmp_path / "m")
    assert not report.sidecar and len(report.baked) == len(res.edits)


# ----------------------------------------------------------------------------- CLI
def test_cli_info_run_capture_compare_export(tiny_pipeline_dir, tmp_path, capsys):
    from safetensors.numpy import load_file

    from neurolens.cli import main
    m = str(tiny_pipeline_dir)
    assert main(["info", "-m", m, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "diffusion" and len(info["sites"]) == 4
    assert "mid.a0.t0" in info["aliases"].values()

    assert main(["run", "-m", m, "--prompt", "a digit 3", "--steps", "3",
                 "--image", str(tmp_path / "run.png")]) == 0
    assert (tmp_path / "run.png").stat().st_size > 0

    assert main(["capture", "-m", m, "--prompt", "a digit 3", "--steps", "3", "--reduce",
                 "mean", "--out", str(tmp_path / "c.safetensors")]) == 0
    t = load_file(tmp_path / "c.safetensors")
    key = "unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post/0"
    assert t[key].shape == (3, 256)
    # without --reduce: the mean over spatial tokens too (as dm.capture); tokens keeps them
    assert main(["capture", "-m", m, "--prompt", "a digit 3", "--steps", "2",
                 "--out", str(tmp_path / "c2.safetensors")]) == 0
    assert load_file(tmp_path / "c2.safetensors")[key].shape == (2, 256)
    assert main(["capture", "-m", m, "--prompt", "a digit 3", "--steps", "2", "--reduce",
                 "tokens", "--out", str(tmp_path / "c3.safetensors")]) == 0
    assert load_file(tmp_path / "c3.safetensors")[key].ndim == 3
    assert main(["capture", "-m", m, "--prompt", "x", "--reduce", "last",
                 "--out", str(tmp_path / "d.safetensors")]) == 2

    site = "unet.mid_block.attentions.0.transformer_blocks.0.ff.hook_post"
    nl.EditSet([nl.Prune(site, list(range(128)))]).save(tmp_path / "e.json")
    capsys.readouterr()
    assert main(["compare", "-m", m, "--edits", str(tmp_path / "e.json"), "--prompt",
                 "a digit 3", "--steps", "3", "--image", str(tmp_path / "cmp.png"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mean_abs_diff"][0] > 0 and (tmp_path / "cmp.png").is_file()
    assert main(["export", "-m", m, "--edits", str(tmp_path / "e.json"), "--out",
                 str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "model_index.json").is_file()
    # an LM-only op is refused with one line and exit 2
    nl.EditSet([nl.TopK(site, 0.1)]).save(tmp_path / "bad.json")
    assert main(["run", "-m", m, "--prompt", "x", "--edits", str(tmp_path / "bad.json")]) == 2
    assert "language models" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_memorization_protocol_runs_end_to_end(dm, monkeypatch):
    """The protocol on the random tiny pipeline: structure and bookkeeping, not the effect."""
    from neurolens.evals import memorization as ev
    mem = [{"prompt": f"exhibit {100 + i}", "image_index": i, "digit": i % 10,
            "split": "A" if i < 2 else "B"} for i in range(4)]
    ordi = [{"prompt": f"a handwritten digit {d}", "digit": d, "split": "eval"}
            for d in range(3)] + [{"prompt": f"a digit {d}", "digit": d, "split": "probe"}
                                  for d in range(3)]
    monkeypatch.setattr(ev, "load_sets", lambda folder=None: (mem, ordi))
    from neurolens.methods import memorization as mz
    seen_iou = []
    real_iou = mz.iou
    monkeypatch.setattr(mz, "iou", lambda a, b: seen_iou.append((a, b)) or real_iou(a, b))
    r = ev.reproduce(dm, steps=3, tau=2, sweep=(0.01, 0.1), log=lambda m: None)
    assert [w["rho"] for w in r["sweep"]] == [0.01, 0.1]
    # rho is chosen on the probe prompts: the first sweep row that passes there, else the
    # paper's 1%; the eval prompts never enter the choice
    passing = [w["rho"] for w in r["sweep"] if w["passes_on_probe"]]
    assert r["rho"] == (passing[0] if passing else 0.01)
    assert r["rho_choice"] == ("probe" if passing else
                               "none passed on the probe prompts: the paper's value")
    for w in r["sweep"]:
        assert w["passes_on_probe"] == (w["similarity_ratio"] <= 0.5
                                        and w["probe_accuracy_ratio"] >= 0.9)
    assert set(r["memorized_raw_correlation"]) == {"before", "after", "ratio"}
    assert r["sweep"][1]["weights_deleted"] > r["sweep"][0]["weights_deleted"] > 0
    assert len(r["memorized_similarity"]["per_prompt_before"]) == 4
    # each sweep row's IoU is that of the masks found on subsets A and B (one call per row, in
    # the sweep's order), recomputed with numpy; the headline is the chosen row's
    assert len(seen_iou) == len(r["sweep"])
    for w, (ma, mb) in zip(r["sweep"], seen_iou):
        assert ma is not mb and set(ma) == set(mb)
        inter = sum(int(np.logical_and(ma[s], mb[s]).sum()) for s in ma)
        union = sum(int(np.logical_or(ma[s], mb[s]).sum()) for s in ma)
        assert w["iou_A_B"] == round(inter / union if union else 0.0, 4)
    assert r["mask_iou_A_B"] == next(w["iou_A_B"] for w in r["sweep"] if w["rho"] == r["rho"])
    assert r["_images"]["after"].shape == (3 * 8, 16, 16, 1)
    assert set(r["targets_met"]) == {"similarity_halved", "accuracy_within_10pct"}
    text = ev.format_table({k: v for k, v in r.items() if k != "_images"})
    assert "rho sweep" in text and "IoU" in text and "copy similarity" in text
    # a fixed rho skips the choice
    r2 = ev.reproduce(dm, steps=3, tau=2, sweep=(0.01,), rho=0.1, log=lambda m: None)
    assert r2["rho"] == 0.1 and r2["rho_choice"] == "given"
    assert [w["rho"] for w in r2["sweep"]] == [0.01, 0.1]


def test_copy_similarity_scores_copies_not_the_digit():
    """1 for the training image itself; about 0 for other images of the same digit, which
    plain correlation scores high (the reason the headline uses the copy similarity)."""
    from neurolens.evals.data import digits_16
    from neurolens.evals.memorization import copy_similarity, correlation
    imgs, labels = digits_16()
    threes = np.nonzero(labels == 3)[0]
    mean3 = imgs[threes].mean(0)
    t = imgs[threes[0]]
    assert copy_similarity(t, t, mean3) == pytest.approx(1.0)
    others = imgs[threes[1:60]]
    copy = np.array([copy_similarity(x, t, mean3) for x in others])
    raw = np.array([correlation(x, t) for x in others])
    assert raw.mean() > 0.6 and abs(copy.mean()) < 0.15
    # hand computation: correlation of the residuals
    a, b = (others[0] - mean3).ravel(), (t - mean3).ravel()
    a, b = a - a.mean(), b - b.mean()
    assert copy[0] == pytest.approx(float(a @ b / np.sqrt((a @ a) * (b @ b))))
    # half copy, half another image of the digit: in between
    mix = copy_similarity(0.5 * t + 0.5 * others[0], t, mean3)
    assert copy[0] + 0.2 < mix < 0.95
