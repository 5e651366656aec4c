"""Diffusion pipelines (Stable Diffusion 1.x/2.x layout): UNet FFN sites, capture per denoising
step, edits as hooks, before/after comparison with the same seeds, export as a diffusers folder.

Sites: one per UNet transformer block FFN, ``unet.<module path>.ff.hook_post`` = the input of the
FFN's output linear ``ff.net.2`` (the GEGLU output), with a short alias (``down1.a0.t0``,
``mid.a0.t0``, ``up2.a1.t0``) shown in the GUI and accepted everywhere a site name is.

The denoising loop is the Stable Diffusion pipeline's own (prompt encoding, latents, classifier-free
guidance, scheduler steps, VAE decode) written as a generator: every step is a cancel point and an
event. A test checks it reproduces ``pipeline(...)`` exactly.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from neurolens.engine.adapters import SiteRef, get_module
from neurolens.engine.baking import BakeTarget, WeightView
from neurolens.engine.capture import Capture, to_numpy
from neurolens.engine.dtypes import torch_dtype
from neurolens.engine.events import (Cancelled, Failed, Finished, Started, StepDone,  # noqa: F401
                                     drain)  # (StepDone re-exported: the pipeline's progress)
from neurolens.engine.export import SIDECAR_NAME
from neurolens.engine.hooks import CancelToken, RunState
from neurolens.engine.model import ModelBase
from neurolens.errors import InputError, LoadError
from neurolens.spec.edits import EditOp, EditSet
from neurolens.spec.sites import is_pattern, unet_alias
from neurolens.store.capture_store import CaptureStore

SITE_SUFFIX = ".ff.hook_post"
DIFFUSION_REDUCTIONS = ("mean", "max", "tokens")


# ----------------------------------------------------------------------------- results
@dataclass
class DiffusionOutput:
    prompts: list[str]
    images: np.ndarray                    # [n, H, W, C] float32 in 0..1
    seeds: list[int]
    steps: int
    guidance: float

    def to_json(self) -> dict:
        return {"prompts": self.prompts, "seeds": self.seeds, "steps": self.steps,
                "guidance": self.guidance, "shape": list(self.images.shape)}


@dataclass
class DiffusionCompare:
    prompts: list[str]
    before: np.ndarray
    after: np.ndarray
    seeds: list[int]

    @property
    def diff(self) -> np.ndarray:
        return np.abs(self.after - self.before)

    def mean_abs_diff(self) -> list[float]:
        return [float(d.mean()) for d in self.diff]


def image_grid(rows, pad: int = 2) -> np.ndarray:
    """Rows of images (each a sequence of [H, W, C] arrays in 0..1) -> one uint8 canvas
    [h, w, C] (C = 1 for grayscale, 3 when any image is RGB) on a white background."""
    h, w = rows[0][0].shape[:2]
    c = 3 if any(im.shape[-1] == 3 for r in rows for im in r) else 1
    n = max(len(r) for r in rows)
    out = np.full(((h + pad) * len(rows) + pad, (w + pad) * n + pad, c), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            im = im if im.shape[-1] == c else np.repeat(im[..., :1], c, axis=-1)
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = (np.clip(im, 0, 1) * 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- handlers
class StepCapture:
    """Read handler: reduce the spatial tokens of the conditional half, append per prompt/step."""

    def __init__(self, site: str, store: CaptureStore, reduce: str = "mean",
                 halves: str = "cond"):
        if reduce not in DIFFUSION_REDUCTIONS:
            raise InputError(f"unknown reduction '{reduce}' for a diffusion model "
                             f"(choose from {', '.join(DIFFUSION_REDUCTIONS)})")
        self.site, self.store, self.reduce, self.halves = site, store, reduce, halves

    def __call__(self, x: torch.Tensor, state: RunState):
        n = len(state.prompt_index)
        if x.shape[0] == 2 * n and self.halves == "cond":
            x = x[n:]
        x = x.detach()
        if self.reduce == "mean":
            red = x.mean(1)
        elif self.reduce == "max":
            red = x.amax(1)
        else:
            red = x.clone() if x.device.type == "cpu" else x
        rows = to_numpy(red)
        if x.shape[0] == 2 * n:   # halves == "both": prompt i gets [uncond_i; cond_i]
            rows = np.concatenate([rows[:n], rows[n:]], axis=-2) if self.reduce == "tokens" \
                else np.stack([rows[:n], rows[n:]], axis=1)
        for b, pi in enumerate(state.prompt_index):
            self.store.append(self.site, pi, rows[b], step=state.step)
        return None


# ----------------------------------------------------------------------------- the model
class DiffusionModel(ModelBase):
    """A loaded diffusers pipeline with neurolens verbs (sites, capture, generate, compare,
    export)."""

    kind = "diffusion"

    def __init__(self, pipe, name_or_path: str = "", device: str = "cpu",
                 base_edits: EditSet | None = None, notes: list[str] | None = None):
        self._init_common(name_or_path, device, base_edits, notes)
        self.pipe = pipe
        self.unet = pipe.unet
        self._sites: dict[str, tuple[str, int]] = {}
        self._alias: dict[str, str] = {}
        for name, mod in self.unet.named_modules():
            ff = getattr(mod, "ff", None)
            net = getattr(ff, "net", None)
            if net is None or not hasattr(mod, "attn1"):
                continue
            lin_i = max(i for i, m in enumerate(net) if isinstance(m, torch.nn.Linear))
            site = f"unet.{name}{SITE_SUFFIX}"
            self._sites[site] = (f"{name}.ff.net.{lin_i}", net[lin_i].in_features)
            self._alias[unet_alias(name)] = site
        # data-flow order: down blocks, the mid block, then up blocks
        order = {"down": 0, "mid": 1, "up": 2}
        self._sites = dict(sorted(self._sites.items(), key=lambda kv: (
            order.get(kv[0].split(".")[1].split("_")[0], 3),
            [int(t) for t in re.findall(r"\d+", kv[0])])))
        if not self._sites:
            raise LoadError(f"{name_or_path}: the UNet has no transformer blocks with a "
                            "feed-forward layer (not a Stable Diffusion style UNet)")
        self._refs: dict[tuple[str, str], SiteRef] = {}

    # -- description -----------------------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return type(self.pipe).__name__

    @property
    def n_layers(self) -> int:
        return len(self._sites)

    @property
    def tokenizer(self):
        return getattr(self.pipe, "tokenizer", None)

    def __repr__(self) -> str:
        return (f"DiffusionModel({self.name_or_path!r}, {self.model_type}, "
                f"{self.n_layers} FFN sites)")

    def n_params(self) -> int:
        """UNet parameters (the part neurolens inspects and edits)."""
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha1()   # the config without private keys (the folder it came from)
        h.update(repr(sorted((k, v) for k, v in self.unet.config.items()
                             if not k.startswith("_"))).encode())
        for name, p in list(self.unet.named_parameters())[:4]:
            h.update(name.encode())
            h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def image_size(self) -> int:
        scale = getattr(self.pipe, "vae_scale_factor", 1)
        return int(self.unet.config.sample_size) * int(scale)

    def sites(self) -> dict[str, int]:
        return {s: w for s, (_, w) in self._sites.items()}

    def aliases(self) -> dict[str, str]:
        """site -> short alias."""
        return {s: a for a, s in self._alias.items()}

    def site_width(self, name: str) -> int:
        return self._sites[self.canonical(name)][1]

    def canonical(self, name: str) -> str:
        if name in self._sites:
            return name
        if name in self._alias:
            return self._alias[name]
        raise InputError(f"unknown site '{name}': this pipeline's sites are "
                         f"{', '.join(list(self._alias)[:6])}... (see `neurolens info`)")

    def resolve(self, name: str, io: str = "input") -> SiteRef:
        site = self.canonical(name)
        ref = self._refs.get((site, io))
        if ref is None:
            path = self._sites[site][0]
            ref = SiteRef(site, f"unet.{path}", get_module(self.unet, path), io,
                          layer=list(self._sites).index(site), kind="ff.hook_post")
            self._refs[(site, io)] = ref
        return ref

    def resolve_sites(self, patterns: str | Iterable[str]) -> list[str]:
        if isinstance(patterns, str):
            patterns = [patterns]
        out: list[str] = []
        names = list(self._sites)
        for p in patterns:
            if p in ("blocks.*.mlp.hook_post", "*", "all"):
                hits = names
            elif is_pattern(p):
                hits = [s for s in names if fnmatch.fnmatchcase(s, p)]
                hits += [self._alias[a] for a in self._alias if fnmatch.fnmatchcase(a, p)]
            else:
                hits = [self.canonical(p)]
            if not hits:
                raise InputError(f"site pattern '{p}' matches no site of this pipeline")
            out += [h for h in hits if h not in out]
        return out

    # -- edits -----------------------------------------------------------------------------------
    def _check_op(self, op: EditOp) -> None:
        if op.positions != "all":
            raise InputError(f"{op.site}: diffusion edits act on every spatial token "
                             "(positions must be 'all')")

    def _validation_widths(self, edits: EditSet) -> dict[str, int]:
        widths = self.sites()
        for a, s in self._alias.items():
            widths[a] = widths[s]
        return widths

    # -- the denoising loop ---------------------------------------------------------------------
    @staticmethod
    def _seed_list(n: int, seed: int | Iterable[int]) -> list[int]:
        """One seed per prompt: ``seed, seed + 1, ...`` or the given list."""
        return [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)

    def _generators(self, n: int, seed: int | Iterable[int]) -> tuple[list, list[int]]:
        seeds = self._seed_list(n, seed)
        if len(seeds) != n:
            raise InputError(f"{len(seeds)} seeds for {n} prompts")
        dev = "cpu" if str(self.device).startswith("mps") else self.device
        return [torch.Generator(dev).manual_seed(int(s)) for s in seeds], seeds

    def denoise_events(self, prompts: list[str], *, edits: EditSet | None = None,
                       captures: dict | None = None, steps: int = 20, guidance: float = 3.0,
                       seed: int | Iterable[int] = 0, negative_prompt: str | None = None,
                       cancel: CancelToken | None = None, preview: bool = False,
                       prompt_index: list[int] | None = None) -> Iterator:
        """Yield ``Started``, a :class:`StepDone` per denoising step, then ``Finished(output)``
        (or ``Cancelled(at=step)``, ``Failed(error)``). Hooks exist only while the generator
        runs."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise InputError("no prompts")
        if steps < 1:
            raise InputError("steps must be >= 1")
        yield Started(steps, "steps")
        try:
            yield from self._denoise(prompts, edits, captures, steps, guidance, seed,
                                     negative_prompt, cancel, preview, prompt_index)
        except Exception as e:  # noqa: BLE001 - reported to the consumer as an event
            yield Failed(e)

    def _denoise(self, prompts, edits, captures, steps, guidance, seed, negative_prompt, cancel,
                 preview, prompt_index) -> Iterator:
        pipe, unet = self.pipe, self.unet
        gens, seeds = self._generators(len(prompts), seed)
        state = RunState(batch=len(prompts), prompt_index=prompt_index or list(range(len(prompts))))
        sched = copy.deepcopy(pipe.scheduler)   # schedulers are stateful (step index)
        do_cfg = guidance > 1.0 and not getattr(unet.config, "time_cond_proj_dim", None)
        size = self.image_size
        with torch.inference_mode():
            pe, ne = pipe.encode_prompt(prompts, self.device, 1, do_cfg,
                                        negative_prompt=([negative_prompt] * len(prompts)
                                                         if negative_prompt else None))
            embeds = torch.cat([ne, pe]) if do_cfg else pe
            sched.set_timesteps(steps, device=self.device)
            timesteps = sched.timesteps
            latents = pipe.prepare_latents(len(prompts), unet.config.in_channels, size, size,
                                           embeds.dtype, self.device, gens)
            extra = pipe.prepare_extra_step_kwargs(gens, 0.0)
            sess = self.session_factory(edits, captures)(state)
            with sess:
                for i, t in enumerate(timesteps):
                    if cancel is not None and cancel.cancelled:
                        yield Cancelled(None, at=i)
                        return
                    state.step = i
                    inp = torch.cat([latents] * 2) if do_cfg else latents
                    inp = sched.scale_model_input(inp, t)
                    state.seq = inp.shape[-1] * inp.shape[-2]
                    noise = unet(inp, t, encoder_hidden_states=embeds, return_dict=False)[0]
                    if do_cfg:
                        u, c = noise.chunk(2)
                        noise = u + guidance * (c - u)
                    out = sched.step(noise, t, latents, **extra, return_dict=True)
                    latents = out.prev_sample
                    pv = None
                    if preview:
                        x0 = getattr(out, "pred_original_sample", None)
                        pv = self._decode(x0 if x0 is not None else latents, gens)
                    yield StepDone(i, len(timesteps), pv)
            images = self._decode(latents, gens)
        yield Finished(DiffusionOutput(prompts, images, seeds, steps, guidance))

    def _decode(self, latents: torch.Tensor, gens) -> np.ndarray:
        vae = self.pipe.vae
        img = vae.decode(latents / vae.config.scaling_factor, return_dict=False,
                         generator=gens)[0]
        return self.pipe.image_processor.postprocess(img, output_type="np",
                                                     do_denormalize=[True] * img.shape[0])

    def generate(self, prompts: str | Iterable[str], *, edits: EditSet | None = None,
                 steps: int = 20, guidance: float = 3.0, seed: int | Iterable[int] = 0,
                 batch_size: int = 16) -> DiffusionOutput:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        seeds = self._seed_list(len(prompts), seed)
        outs = []
        for a in range(0, len(prompts), batch_size):
            outs.append(drain(self.denoise_events(
                prompts[a:a + batch_size], edits=edits, steps=steps, guidance=guidance,
                seed=seeds[a:a + batch_size])))
        return DiffusionOutput(prompts, np.concatenate([o.images for o in outs]), seeds, steps,
                               guidance)

    def capture(self, prompts: str | Iterable[str], sites="*", *, reduce: str = "mean",
                edits: EditSet | None = None, steps: int = 20, guidance: float = 3.0,
                seed: int | Iterable[int] = 0,
                store: CaptureStore | None = None, **_ignored) -> Capture:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        names = self.resolve_sites(sites)
        store = store or CaptureStore(stats=False)
        caps = {s: StepCapture(s, store, reduce) for s in names}
        drain(self.denoise_events(prompts, edits=edits, captures=caps, steps=steps,
                                  guidance=guidance, seed=seed))
        return Capture(prompts, names, [[] for _ in prompts], reduce, store=store, steps=steps)

    def compare(self, prompts: str | Iterable[str], edits: EditSet, *, steps: int = 20,
                guidance: float = 3.0, seed: int | Iterable[int] = 0) -> DiffusionCompare:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        before = self.generate(prompts, steps=steps, guidance=guidance, seed=seed)
        after = self.generate(prompts, edits=edits, steps=steps, guidance=guidance, seed=seed)
        return DiffusionCompare(prompts, before.images, after.images, before.seeds)

    # -- export ----------------------------------------------------------------------------------
    export_words = {"source": "pipeline", "weights": "UNet weights",
                    "library": "`diffusers` (`DiffusionPipeline.from_pretrained`)",
                    "why": "they act on a window of denoising steps",
                    "loader": "plain diffusers"}

    def bake_target(self, unet, site: str) -> BakeTarget:
        """A UNet FFN site is the input of ``ff.net.2`` (in ``unet``, a copy of the UNet)."""
        return BakeTarget(reads=WeightView(get_module(unet, self._sites[site][0])))

    def _export_copy(self):
        return copy.deepcopy(self.unet)

    def _save_export(self, unet, tmp: Path) -> None:
        pipe2 = type(self.pipe)(**{**self.pipe.components, "unet": unet})
        pipe2.save_pretrained(tmp, safe_serialization=True)


def load_pipeline(path: str | os.PathLike, *, device: str = "cpu", dtype=None,
                  apply_sidecar: bool = True) -> DiffusionModel:
    """Load a diffusers pipeline folder (``model_index.json``)."""
    import diffusers

    path = Path(path)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    kw = {"use_safetensors": True}
    td = torch_dtype(dtype)
    if td is not None and td != "auto":
        kw["torch_dtype"] = td
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), **kw)
    except Exception as e:  # noqa: BLE001 - diffusers raises many kinds on bad folders
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoadError(f"could not load the diffusion pipeline {path}: {msg[:300]}") from None
    if getattr(pipe, "unet", None) is None:
        raise LoadError(f"{path}: {type(pipe).__name__} has no UNet; neurolens supports "
                        "Stable Diffusion style pipelines (UNet2DConditionModel)")
    for needed in ("encode_prompt", "prepare_latents", "prepare_extra_step_kwargs"):
        if not hasattr(pipe, needed):
            raise LoadError(f"{path}: {type(pipe).__name__} is not a Stable Diffusion style "
                            "pipeline (text-to-image with a UNet)")
    if device != "cpu":
        try:
            pipe = pipe.to(device)
        except (RuntimeError, AssertionError) as e:
            raise LoadError(f"device '{device}' is not usable: {str(e).splitlines()[0]}") from None
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    base, notes = None, []
    side = path / SIDECAR_NAME
    if apply_sidecar and side.is_file():
        base = EditSet.load(side)
        notes.append(f"re-applying {len(base)} edit(s) from {SIDECAR_NAME}")
    return DiffusionModel(pipe, name_or_path=str(path), device=device, base_edits=base,
                          notes=notes)
