"""The machine a run measured on, one case as a line, the results as a Markdown table."""

from __future__ import annotations

import os
import platform

from neurolens.bench.measure import Case


def machine() -> dict:
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform()}


def _v(value: float, unit: str) -> str:
    return f"{value * 1e3:.2f} ms" if unit == "s" else f"{value:.1f} {unit}"


def _ok(ok: bool | None, yes: str = "OK", no: str = "MISSED") -> str:
    """A case with no budget (``ok`` None) reports its number only."""
    return "-" if ok is None else yes if ok else no


def fmt_case(c: Case) -> str:
    if c.reference is not None and c.unit != "s":
        return (f"{_v(c.subject, c.unit)} vs {_v(c.reference, c.unit)} -> ratio {c.ratio:.3f} "
                f"(budget {c.budget}) {_ok(c.ok)}")
    if c.reference is not None:
        return (f"{c.subject * 1e3:.2f} ms vs {c.reference * 1e3:.2f} ms -> ratio "
                f"{c.ratio:.3f} (budget {c.budget}) {_ok(c.ok)}")
    return f"{c.subject:.3f} {c.unit} (budget {c.budget} {c.unit}) {_ok(c.ok)}"


def table(result: dict) -> str:
    """Markdown table for the README."""
    m = result["machine"]
    lines = [f"Machine: {m['processor']}, {m['cpus']} CPUs, torch {m['torch']} "
             f"({m['threads']} threads), Python {m['python']}.", "",
             "| case | neurolens | reference | ratio / value | budget | ok |",
             "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        if c["reference"] is not None:
            aa = c.get("detail", {}).get("a_a_ratio")
            extra = f" (A/A control: {aa:.3f})" if aa is not None else ""
            lines.append(f"| {c['name']} | {_v(c['subject'], c['unit'])} | "
                         f"{_v(c['reference'], c['unit'])} | {c['ratio']:.3f}{extra} | "
                         f"{c['budget']} | {_ok(c['ok'], 'yes', 'no')} |")
        else:
            lines.append(f"| {c['name']} | {c['subject']:.3f} {c['unit']} | | | "
                         f"{c['budget']} {c['unit']} | {_ok(c['ok'], 'yes', 'no')} |")
    return "\n".join(lines)
