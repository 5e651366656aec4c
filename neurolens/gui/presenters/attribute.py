"""The Attribute panel and the neuron dashboard as data (no Qt): the form's choices turned into
an attribution request, an attribution result turned into what the views draw (a layer x neuron
effect matrix with symmetric colour levels, token x neuron rows, the top-K table), and an index
dashboard turned into a header line, histogram bars and shaded example lines."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from neurolens.spec.sites import neuron_label, parse_site

#: the form's method choices: engine method -> label
METHODS = {"attribution": "attribution patching", "gradxact": "gradient × activation",
           "exact": "exact patching (every neuron)"}
#: the form's corruption choices that are not a prompt set: key -> label
ABLATIONS = {"mean": "mean ablation", "zero": "zero ablation", "typed": "corrupted prompt below"}
#: prefix of a prompt set in the clean and corrupted combos
SET_PREFIX = "set: "
TYPED = "typed prompt"


class FormError(ValueError):
    """The form cannot make a request; the message is one line for the user."""


@dataclass
class AttributeRequest:
    """What the attribution job runs (the engine's ``attribute`` arguments)."""

    prompts: list[str]
    answer: str | list[str]
    contrast: str | None
    corrupt: list[str] | None
    ablate: str | None
    method: str
    sites: str
    top: int
    mean_prompts: list[str] | None = None

    def kwargs(self) -> dict:
        return dict(corrupt=self.corrupt, ablate=self.ablate, sites=self.sites,
                    method=self.method, mean_prompts=self.mean_prompts)


def clean_choices(set_names: list[str]) -> list[str]:
    return [TYPED] + [SET_PREFIX + s for s in set_names]


def corrupt_choices(set_names: list[str]) -> list[str]:
    return list(ABLATIONS.values()) + [SET_PREFIX + s for s in set_names]


def _set_prompts(rows: list[tuple[str, str]], name: str) -> list[str]:
    return [p for s, p in rows if s == name]


def set_answer(rows, answers: dict[str, str], choice: str) -> str:
    """The answer field's prefill for a clean choice: the set's answer when all its prompts
    share one, else blank (the per-prompt answers are used)."""
    if not choice.startswith(SET_PREFIX):
        return ""
    got = {answers.get(p) for p in _set_prompts(rows, choice[len(SET_PREFIX):])}
    return (got.pop() or "") if len(got) == 1 else ""


def build_request(rows: list[tuple[str, str]], answers: dict[str, str], *, clean: str,
                  typed: str, answer: str, contrast: str, corruption: str, corrupt_text: str,
                  method: str, kind: str, top: int) -> AttributeRequest:
    """The form's values as a request. ``rows``/``answers``: the prompt list's; ``clean``,
    ``corruption``: the combos' texts; ``kind``: the neuron site kind (every layer's)."""
    if clean.startswith(SET_PREFIX):
        name = clean[len(SET_PREFIX):]
        prompts = _set_prompts(rows, name)
        if not prompts:
            raise FormError(f"the prompt set '{name}' is empty")
    else:
        typed = typed.replace("\\n", "\n")
        if not typed.strip():
            raise FormError("no prompt: type one in the Prompt box or choose a prompt set")
        prompts = [typed]
    ans: str | list[str]
    if answer.strip():
        ans = answer
    else:
        per = [answers.get(p) for p in prompts]
        if any(a is None for a in per):
            raise FormError("no answer: type the answer the metric scores (the chosen prompts "
                            "have no answers of their own)")
        ans = per
    corrupt, ablate, mean_prompts = None, None, None
    if corruption == ABLATIONS["mean"]:
        ablate = "mean"
        everything = [p for _, p in rows]
        if not clean.startswith(SET_PREFIX) and len(everything) > 1:
            mean_prompts = everything    # a typed prompt: the prompt list's mean; a set: its own
    elif corruption == ABLATIONS["zero"]:
        ablate = "zero"
    elif corruption == ABLATIONS["typed"]:
        text = corrupt_text.replace("\\n", "\n")
        if not text.strip():
            raise FormError("no corrupted prompt: type one, or choose mean or zero ablation")
        if len(prompts) != 1:
            raise FormError("one typed corrupted prompt needs one clean prompt: choose a "
                            "corrupted set of the same size, or an ablation")
        corrupt = [text]
    elif corruption.startswith(SET_PREFIX):
        corrupt = _set_prompts(rows, corruption[len(SET_PREFIX):])
        if len(corrupt) != len(prompts):
            raise FormError(f"the corrupted set has {len(corrupt)} prompts for "
                            f"{len(prompts)} clean ones: they pair up row by row")
    else:
        raise FormError(f"unknown corruption '{corruption}'")
    if method not in METHODS:
        method = next((k for k, v in METHODS.items() if v == method), method)
    return AttributeRequest(prompts, ans, contrast.strip() and contrast or None, corrupt,
                            ablate, method, f"blocks.*.{kind}", max(1, int(top)), mean_prompts)


def symmetric_levels(m: np.ndarray) -> tuple[float, float]:
    """Colour levels centred on zero (white = no effect)."""
    finite = np.abs(m[np.isfinite(m)])
    hi = float(finite.max()) if finite.size else 0.0
    hi = hi if hi > 0 else 1e-6
    return -hi, hi


@dataclass
class TopRow:
    site: str
    neuron: int
    label: str
    effect: float
    exact: float | None = None


@dataclass
class AttributionView:
    """What the Attribute views draw from one result."""

    matrix: np.ndarray                     # layer x neuron (NaN -> 0)
    levels: tuple[float, float]
    row_labels: list[str]
    sites: list[str]
    rows: list[TopRow]
    header: str
    tokens: list[str] = field(default_factory=list)     # one prompt: its run's tokens

    def site_row(self, site: str) -> int | None:
        return self.sites.index(site) if site in self.sites else None

    def exact(self) -> dict[tuple[str, int], float]:
        return {(r.site, r.neuron): r.exact for r in self.rows if r.exact is not None}


def _layer_label(site: str) -> str:
    p = parse_site(site)
    return f"L{p.layer}" if p is not None else site


def header_text(res) -> str:
    corr = ("corrupted prompts" if res.corruption == "prompts"
            else f"{res.corruption} ablation")
    n = len(res.prompts)
    return (f"{METHODS.get(res.method, res.method)} · {n} prompt{'s' if n != 1 else ''} · "
            f"metric {res.metric_text}: clean {res.clean:+.3f}, {corr} {res.corrupted:+.3f}")


def result_view(res, top: int) -> AttributionView:
    """The views' data of an engine :class:`~neurolens.engine.attribution_result.Attribution`:
    its effects as a layer x neuron matrix (unscored neurons 0), the top ``top`` by |effect|
    (with their exact effects where it verified them)."""
    widths = {len(res.effects[s]) for s in res.sites}
    cols = max(widths)
    m = np.zeros((len(res.sites), cols), np.float32)
    for r, s in enumerate(res.sites):
        e = np.nan_to_num(np.asarray(res.effects[s], np.float64), nan=0.0)
        m[r, :len(e)] = e
    exact = {(v["site"], v["neuron"]): v["exact"] for v in res.verified}
    rows = [TopRow(s, n, neuron_label(s, n), e, exact.get((s, n)))
            for s, n, e in res.top(top)]
    toks = res.tokens[0] if len(res.tokens) == 1 else []
    return AttributionView(m, symmetric_levels(m), [_layer_label(s) for s in res.sites],
                           list(res.sites), rows, header_text(res), list(toks))


def with_exact(view: AttributionView, res) -> AttributionView:
    """``view`` with the exact effects of an exact-patching result of (some of) its rows."""
    for r in view.rows:
        v = res.effects.get(r.site)
        if v is not None and r.neuron < len(v) and np.isfinite(v[r.neuron]):
            r.exact = float(v[r.neuron])
    return view


def token_rows(res, site: str) -> tuple[np.ndarray, list[str]] | None:
    """Token x neuron effects of the one prompt at ``site`` (gradient methods), with the token
    labels; None where there are none (a prompt set, exact patching)."""
    if res.per_prompt is None or len(res.prompts) != 1 or site not in res.per_prompt:
        return None
    a = np.nan_to_num(np.asarray(res.per_prompt[site][0], np.float32))
    labels = [t.replace("\n", "⏎") for t in res.tokens[0]][:a.shape[0]]
    return a, labels


def table_cells(row: TopRow) -> list[str]:
    return [row.site, row.label, f"{row.effect:+.4f}",
            "" if row.exact is None else f"{row.exact:+.4f}"]


def edit_note(res, k: int) -> str:
    return f"top {k} by |{res.method} effect| on {res.metric_text}"


# -- dashboards ----------------------------------------------------------------------------------
def missing_index_text(model_name: str) -> str:
    """The one line shown when no index exists for the loaded model."""
    return ("No neuron index for this model: build one with "
            f"<code>neurolens index build -m {html.escape(model_name or 'MODEL')} "
            "--corpus FILE</code>")


def dashboard_header(d) -> str:
    pct = 100.0 * float(d.density)
    return (f"corpus: fires on {pct:.3g}% of {int(d.n_tokens):,} tokens "
            f"(&gt; {float(d.threshold):g}) · max {float(d.max):.3g} · "
            f"mean {float(d.mean):.3g}")


def histogram_bars(d) -> tuple[np.ndarray, np.ndarray]:
    """(edges, heights): log10(1 + count) per bin, so the rare strong activations show beside
    the mass at zero; the under/overflow bins keep their (possibly zero) widths."""
    edges = np.asarray(d.hist_edges, np.float64)
    counts = np.asarray(d.hist_counts, np.float64)
    return edges, np.log10(1.0 + counts)


def _shade(v: float, vmax: float) -> str:
    a = 0.0 if vmax <= 0 else max(0.0, min(1.0, v / vmax))
    g = int(round(255 - 120 * a))
    return f"rgb(255,{g},{g})" if a > 0.02 else ""


def _token_html(t: str) -> str:
    return html.escape(t.replace("\n", "⏎")).replace(" ", "&nbsp;")


def example_html(ex, vmax: float) -> str:
    """One example: its value, then its context with the max token boxed and every token
    shaded by the neuron's activation there (where known)."""
    parts = []
    for i, t in enumerate(ex.tokens):
        acts = getattr(ex, "acts", None)
        v = acts[i] if acts is not None and i < len(acts) else (ex.value if i == ex.focus
                                                              else 0.0)
        bg = _shade(float(v), vmax)
        style = f"background-color:{bg};" if bg else ""
        if i == ex.focus:
            style += "font-weight:bold; border:1px solid #b00; text-decoration:underline;"
        parts.append(f'<span style="{style}">{_token_html(t)}</span>' if style
                     else _token_html(t))
    text = "".join(parts) if parts else f"<i>doc {ex.doc}, token {ex.pos}</i>"
    return (f'<tr><td align="right" style="color:#555; padding-right:6px">{ex.value:.3f}'
            f'</td><td style="font-family:monospace">{text}</td></tr>')


def dashboard_html(d) -> str:
    vmax = max([float(e.value) for e in d.top] + [0.0])
    rows = "".join(example_html(e, vmax) for e in d.top)
    note = f"<p><i>{html.escape(d.note)}</i></p>" if getattr(d, "note", "") else ""
    if not d.top:
        return note + "<p><i>never active in the corpus</i></p>"
    return f'{note}<table cellspacing="0" cellpadding="1">{rows}</table>'
