"""Results of the worker as text and table rows: runs, comparisons, exports, method fits."""

from __future__ import annotations

from html import escape

import numpy as np

from neurolens.spec.sites import neuron_label


def output_html(prompt: str, generated: str) -> str:
    """The prompt (grey) and what the model generated after it (highlighted)."""
    return (f"<span style='color:#555'>{escape(prompt)}</span>"
            f"<span style='background:#fff3b0'>{escape(generated)}</span>").replace("\n",
                                                                                  "⏎<br>")


def selection_text(selection: list[tuple[str, int]], limit: int = 12) -> str:
    labels = [neuron_label(s, i) for s, i in selection[:limit]]
    more = len(selection) - len(labels)
    if not selection:
        return "none"
    return ", ".join(labels) + (f" … (+{more})" if more > 0 else "")


def images_caption(step: int, n_steps: int, seed: int) -> str:
    what = "final images" if step >= n_steps else \
        f"denoising step {step + 1}/{n_steps} (predicted image)"
    return f"{what}; seeds from {seed}"


# -- compare ---------------------------------------------------------------------------------------
def compare_status(r: dict) -> str:
    """The status line after a comparison of generations: how many outputs the edits changed."""
    n = sum(it["changed"] for it in r["items"])
    return f"compared in {r['seconds']:.2f}s: {n} of {len(r['items'])} outputs changed"


def image_compare_status(r: dict) -> str:
    """The status line after a comparison of images: how many the edits changed."""
    n = sum(v > 1e-3 for v in r["mean_abs_diff"])
    return f"compared in {r['seconds']:.2f}s: {n} of {len(r['mean_abs_diff'])} images changed"


def image_compare_rows(r: dict) -> tuple[list[np.ndarray], str]:
    """A pipeline comparison's image rows (baseline, edited, difference scaled to its max) and
    their caption."""
    d = r["diff"]
    d = d / max(float(d.max()), 1e-8)
    mad = ", ".join(f"{v:.3f}" for v in r["mean_abs_diff"][:8])
    return [r["before"], r["after"], d], (
        f"Rows: baseline | edited ({r['n_edits']} edit(s)) | difference (scaled to its max). "
        f"Same seeds (from {r['seed']}). Mean |edited − baseline| per image: {mad}")


def compare_summary(r: dict) -> str:
    n_changed = sum(it["changed"] for it in r["items"])
    return (f"<b>{n_changed} of {len(r['items'])} outputs changed</b> by {r['n_edits']} "
            f"enabled edit(s) · seed {r['seed']}")


def token_html(tokens: list[str], start_diff: int | None, other: list[str]) -> str:
    """Tokens with the first divergence marked and the changed tokens highlighted."""
    out = []
    for k, t in enumerate(tokens):
        txt = escape(t).replace("\n", "⏎")
        changed = start_diff is not None and k >= start_diff and (k >= len(other) or
                                                                  other[k] != t)
        if start_diff is not None and k == start_diff:
            out.append("<span style='color:#c00;font-weight:bold'>▶</span>")
        out.append(f"<span style='background:#ffc9c9'>{txt}</span>" if changed else txt)
    return "".join(out)


def compare_table_html(items: list[dict]) -> str:
    """Baseline and edited outputs side by side, one row per prompt."""
    rows = ["<table width='100%' cellspacing='0' cellpadding='4' border='1' "
            "style='border-collapse:collapse'><tr><th>prompt</th><th>baseline</th>"
            "<th>edited</th></tr>"]
    for it in items:
        d = it["first_divergence"]
        mark = "" if d is None else f"<br><small>diverges at token {d}</small>"
        rows.append(
            f"<tr><td><small>[{escape(it['set'])}]</small> {escape(it['prompt'])}{mark}"
            f"</td><td style='font-family:monospace'>"
            f"{token_html(it['base_tokens'], d, it['edit_tokens'])}</td>"
            f"<td style='font-family:monospace'>"
            f"{token_html(it['edit_tokens'], d, it['base_tokens'])}</td></tr>")
    rows.append("</table>")
    return "".join(rows).replace("\n", "<br>")


def metric_rows(metrics: list[dict]) -> list[list[str]]:
    """The skill table: prompt set, before, after, relative (after / before)."""
    out = []
    for row in metrics:
        rel = row["relative"]
        out.append([row["set"], f"{row['before']:.3f}", f"{row['after']:.3f}",
                    "n/a" if rel is None else f"{rel:.3f}"])
    return out


def token_probabilities(item: dict) -> list[tuple[str, np.ndarray]]:
    """(run, probability of each chosen token) of a compared prompt, baseline then edited."""
    return [(name, np.exp(np.asarray(item[key], dtype=float)))
            for key, name in (("base_logprobs", "baseline"), ("edit_logprobs", "edited"))]


# -- export ----------------------------------------------------------------------------------------
def export_message(r: dict) -> str:
    """What an export did: what was baked, what stayed in the sidecar, the reload check."""
    lines = [f"Exported to {r['path']}", ""]
    if r["baked"]:
        lines.append(f"Baked into the weights ({len(r['baked'])}): plain transformers "
                     "applies them.")
        lines += [f"  • {b}" for b in r["baked"][:12]]
    if r["sidecar"]:
        lines.append(f"NOT baked ({len(r['sidecar'])}): kept in neurolens_edits.json; only "
                     "neurolens.load() applies them.")
        lines += [f"  • {b}" for b in r["sidecar"][:12]]
    if not r["baked"] and not r["sidecar"]:
        lines.append("No enabled edits: the checkpoint equals the loaded model.")
    c = r.get("check") or {}
    if c and "max_abs_prob_diff" in c:
        lines += ["", f"Reload check on {c['samples']} samples: "
                      f"{'passed' if c['same_output'] else 'FAILED'} (max class-probability "
                      f"difference {c['max_abs_prob_diff']:.2e}, the same predictions: "
                      f"{'yes' if c['same_output'] else 'no'})"]
    elif c and "max_abs_pixel_diff" in c:
        lines += ["", f"Reload check on “{c['prompt'][:60]}”: "
                      f"{'passed' if c['same_output'] else 'FAILED'} (max pixel difference "
                      f"{c['max_abs_pixel_diff']:.2e} between the exported pipeline and the "
                      "in-app edited one)"]
    elif c:
        ok = c["same_output"] and c["max_abs_logit_diff"] < 1e-4
        lines += ["", f"Reload check on “{c['prompt'][:60]}”: "
                      f"{'passed' if ok else 'FAILED'} (max logit difference "
                      f"{c['max_abs_logit_diff']:.2e}, same greedy output: "
                      f"{'yes' if c['same_output'] else 'no'})"]
    return "\n".join(lines)


# -- methods ---------------------------------------------------------------------------------------
def method_report(r: dict) -> str:
    """The Methods panel's report after a fit."""
    return r["text"] + f"\n→ {len(r['ops'])} edit(s) added to the edit list"
