"""Key Space Detection (skill unlearning by abstention; METHODS.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurolens.errors import InputError
from neurolens.methods.common import probe_reduced
from neurolens.methods.registry import MethodResult, MethodSpec, Role, param, register
from neurolens.spec.edits import DEFAULT_REFUSAL, EditSet, Gate, ModelRef
from neurolens.spec.sites import site_name

REFUSAL = DEFAULT_REFUSAL


@dataclass
class KeySpaceReport:
    site: str
    k_star: float
    alpha: float
    n_probe: int
    probe_inside: float          # fraction of the probe set inside the scaled cube
    layer_choice: list | None = None   # per-layer table when the layer was chosen ("auto")
    fallback: str | None = None        # why "auto" probed hook_pre instead of hook_post

    @property
    def chosen(self) -> dict | None:
        """The table row of the chosen layer (None unless the layer was chosen)."""
        if not self.layer_choice:
            return None
        return self.layer_choice[int(self.site.split(".")[1])]

    @property
    def k_star_limit(self) -> float:
        """The largest k* that n probe points allow, (n - 1) / sqrt(n): reached by a dimension
        in which a single probe point differs from all the others."""
        return _k_star_limit(self.n_probe)

    @property
    def warning(self) -> str | None:
        """Set when k* is at its limit: then one prompt alone in some dimension (typical of
        sparse, e.g. ReLU, activations) sets the cube's size, which makes it wide in every other
        dimension, so prompts of other skills are likely to fall inside."""
        if not k_star_at_limit(self.k_star, self.n_probe):
            return None
        return (f"k* = {self.k_star:.3g} is the largest value {self.n_probe} probe prompts allow: "
                "in some dimension a single prompt differs from all the others (sparse "
                f"activations at {self.site}?), so the cube is wide everywhere else and may catch "
                "other skills; try another layer or hook_pre")

    def summary(self, keep_name: str = "") -> str:
        best, chosen = self.chosen, ""
        if best is not None:
            keep = f"'{keep_name}'" if keep_name else "the keep set"
            chosen = (f" (chosen: {best['forget_inside']:.0%} of held-back forget prompts and "
                      f"{best['others_inside']:.0%} of {keep} inside)")
        text = (f"Key Space Detection at {self.site}{chosen}: k* = {self.k_star:.3g}, alpha "
                f"{self.alpha:g}; {self.probe_inside:.0%} of the forget set inside")
        if self.fallback:
            text += f" ({self.fallback})"
        if self.warning:
            text += f". Warning: {self.warning}"
        return text

    def to_json(self) -> dict:
        out = {"site": self.site, "k_star": round(self.k_star, 4), "alpha": self.alpha,
               "n_probe": self.n_probe, "probe_inside": round(self.probe_inside, 4)}
        if self.warning:
            out["warning"] = self.warning
        if self.fallback:
            out["fallback"] = self.fallback
        if self.layer_choice:
            out["layer_choice"] = self.layer_choice
        return out


def fit_cube(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """mu, unbiased s and k* = max_i max_j |a_ij - mu_j| / s_j (0/0 counts as 0)."""
    a = np.asarray(a, np.float64)
    mu = a.mean(0)
    s = a.std(0, ddof=1) if len(a) > 1 else np.zeros_like(mu)
    dev = np.abs(a - mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s > 0, dev / np.where(s > 0, s, 1), np.where(dev > 0, np.inf, 0.0))
    k = float(ratio.max()) if ratio.size else 0.0
    if not np.isfinite(k):  # a dimension with s == 0 but varying values cannot happen
        k = float(ratio[np.isfinite(ratio)].max())
    return mu.astype(np.float32), s.astype(np.float32), k


def inside(x: np.ndarray, mu: np.ndarray, s: np.ndarray, k: float, alpha: float) -> np.ndarray:
    half = alpha * k * s.astype(np.float64) + 1e-6 * (1 + np.abs(mu))
    return np.all(np.abs(np.asarray(x, np.float64) - mu) <= half, axis=-1)


def fit(lm, forget: list[str], alpha: float = 1.0, layer: int | str | None = None,
        kind: str = "mlp.hook_post", refusal: str = REFUSAL, batch_size: int = 16,
        keep: list[str] | None = None, progress=None) -> MethodResult:
    """Fit the hypercube on the last-token vectors of the forget probe set at one layer
    (default: the last layer; ``"auto"``: chosen by :func:`select_layer` against ``keep``, the
    prompts of the skills to keep) and return a Gate edit.

    With ``"auto"``, where the chosen ``hook_post`` cube has k* at its limit (one prompt alone in
    a dimension: sparse, e.g. ReLU, features; see :attr:`KeySpaceReport.warning`), the layer is
    chosen again on ``hook_pre``, the dense gate pre-activation, and that site is used when its
    cube is not at the limit (the report's ``fallback`` says so)."""
    table, fallback = None, None
    if layer == "auto":
        if not keep:
            raise InputError("choosing the layer ('auto') needs prompts of the skills to keep")
        layer, table, a = _choose_layer(lm, forget, keep, alpha, kind, batch_size, progress)
        cube = fit_cube(a)
        dense = "mlp.hook_pre"
        if (kind == "mlp.hook_post" and k_star_at_limit(cube[2], len(a))
                and site_name(layer, dense) in lm.sites()):
            layer2, table2, a2 = _choose_layer(lm, forget, keep, alpha, dense, batch_size,
                                               progress)
            cube2 = fit_cube(a2)
            if not k_star_at_limit(cube2[2], len(a2)):
                fallback = (f"hook_post k* at its limit at layer {layer} (sparse features); "
                            f"probed {dense} instead")
                layer, table, a, cube, kind = layer2, table2, a2, cube2, dense
        site = site_name(layer, kind)
    else:
        layer = lm.n_layers - 1 if layer is None else int(layer)
        if layer < 0:
            layer += lm.n_layers
        site = site_name(layer, kind)
        a = probe_reduced(lm, forget, [site], "last", batch_size, progress=progress)[site]
        cube = fit_cube(a)
    mu, s, k = cube
    frac = float(inside(a, mu, s, k, alpha).mean())
    op = Gate(site, mu, s, k, alpha=alpha, refusal=refusal,
              note=f"Key Space Detection (k*={k:.3g})")
    return MethodResult(EditSet([op], ModelRef(lm.name_or_path, lm.fingerprint)),
                        KeySpaceReport(site, k, alpha, len(a), frac, table, fallback))


def k_star_at_limit(k: float, n: int) -> bool:
    """Whether k* of a cube fitted on n probe points is at its limit (n - 1) / sqrt(n): one
    point alone in some dimension sets it (see :attr:`KeySpaceReport.warning`)."""
    return n >= 3 and k >= 0.999 * _k_star_limit(n)


def _k_star_limit(n: int) -> float:
    return (n - 1) / np.sqrt(n) if n > 1 else 0.0


def select_layer(lm, forget: list[str], others: list[str], alpha: float = 1.0,
                 kind: str = "mlp.hook_post", batch_size: int = 16,
                 progress=None) -> tuple[int, list[dict]]:
    """Choose the probe layer on probe data: per layer, fit the cube on every other forget
    prompt and measure how many of the remaining forget prompts fall inside (should be all) and
    how many of the ``others`` (prompts of the skills to keep) do (should be none), both at the
    prompt's last token. Returns the layer with the largest margin (ties: the later layer) and
    the per-layer table."""
    layer, table, _ = _choose_layer(lm, forget, others, alpha, kind, batch_size, progress)
    return layer, table


def _choose_layer(lm, forget, others, alpha, kind, batch_size, progress):
    """select_layer, plus the chosen layer's forget vectors (fit reuses them)."""
    sites = [site_name(i, kind) for i in range(lm.n_layers)]
    fa = probe_reduced(lm, forget, sites, "last", batch_size, progress=progress)
    fo = probe_reduced(lm, others, sites, "last", batch_size)
    table = []
    for i, site in enumerate(sites):
        a = fa[site]
        mu, s, k = fit_cube(a[0::2])
        held = float(inside(a[1::2], mu, s, k, alpha).mean()) if len(a) > 1 else 0.0
        other = float(inside(fo[site], mu, s, k, alpha).mean()) if len(others) else 0.0
        table.append({"layer": i, "k_star": round(k, 3), "forget_inside": round(held, 4),
                      "others_inside": round(other, 4), "margin": round(held - other, 4)})
    best = max(table, key=lambda r: (r["margin"], r["layer"]))["layer"]
    return best, table, fa[sites[best]]


@dataclass
class Params:
    # the form starts at 2.0, the cube that suits the default forget set (arithmetic; see
    # evals.reproduce.KSD_ALPHA)
    alpha: float = param(1.0, "cube scale (1.0)", form=2.0)
    layer: int | str | None = param(None, "layer index (default: the last) or 'auto'")

    def check(self) -> None:
        if isinstance(self.layer, str) and self.layer != "auto":
            try:
                self.layer = int(self.layer)
            except ValueError:
                raise InputError(f"layer takes a layer index or 'auto', not {self.layer!r}"
                                 ) from None
        if not self.alpha > 0:
            raise InputError(f"alpha must be > 0, got {self.alpha}")


def _fit(model, sets, params: Params, progress=None, shown=None, **_) -> MethodResult:
    auto = params.layer == "auto"
    res = fit(model, sets["forget"], alpha=params.alpha, layer=params.layer,
              keep=sets.get("keep") if auto else None, progress=progress)
    if shown:   # which of the prompts on screen fall inside the cube
        rep, op = res.report, res.edits[0]
        vecs = np.concatenate(model.capture(shown, [rep.site], reduce="last")[rep.site])
        res.extra["inside"] = inside(vecs, op.mu, op.s, op.k, op.alpha).tolist()
    return res


def _summary(res: MethodResult, names: dict) -> str:
    text = res.report.summary(names.get("keep", ""))
    if "inside" in res.extra:
        got = res.extra["inside"]
        text += f"; {sum(got)} of {len(got)} shown prompts inside"
    return text


register(MethodSpec(
    "key-space", "Key Space Detection", ("lm",),
    (Role("forget", "prompts of the skill to forget"),
     Role("keep", "prompts of the skills to keep (used by --layer auto)", many=True,
          required=False, differs_from="forget", needed_if=("layer", "auto"))),
    Params, _fit, "skill unlearning by abstention: a hypercube around the skill's last-token "
    "vectors", summarize=_summary))
