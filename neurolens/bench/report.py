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


def fmt_case(c: Case) -> str:
    if c.reference is not None and c.unit != "s":
        return (f"{_v(c.subject, c.unit)} vs {_v(c.reference, c.unit)} -> ratio {c.ratio:.3f} "
                f"(budget {c.budget}) {'OK' if c.ok else 'MISSED'}")
    if c.reference is not None:
        return (f"{c.subject * 1e3:.2f} ms vs {c.reference * 1e3:.2f} ms -> ratio "
                f"{c.ratio:.3f} (budget {c.budget}) {'OK' if c.ok else 'MISSED'}")
    return f"{c.subject:.3f} {c.unit} (budget {c.budget} {c.unit}) {'OK' if c.ok else 'MISSED'}"


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
                         f"{c['budget']} | {'yes' if c['ok'] else 'no'} |")
        else:
            lines.append(f"| {c['name']} | {c['subject']:.3f} {c['unit']} | | | "
                         f"{c['budget']} {c['unit']} | {'yes' if c['ok'] else 'no'} |")
    return "\n".join(lines)
