"""Prompt files: text lines or JSONL rows with a ``prompt`` and an optional ``answer``.

Pure data (no torch, no Qt): the CLI, the GUI and scripts read prompt files through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from neurolens.errors import InputError


def read_prompt_rows(path: str) -> list[tuple[str, str | None]]:
    """(prompt, answer) per row of a prompts file: text lines (``\\n`` escapes a newline;
    no answers), or JSONL objects with a ``prompt`` string and an optional ``answer`` string.
    Blank lines are skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompts file not found: {path}")
    try:
        lines = p.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    rows = [ln for ln in lines if ln.strip()]
    if not rows:
        raise InputError(f"{path}: no prompts in the file")
    if not all(r.lstrip().startswith("{") for r in rows):
        return [(r.replace("\\n", "\n"), None) for r in rows]
    out = []
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            d = json.loads(ln)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: malformed JSON ({e.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str):
            raise InputError(f"{path}:{n}: expected an object with a 'prompt' string")
        answer = d.get("answer")
        out.append((d["prompt"], answer if isinstance(answer, str) else None))
    return out


def probe_split(path: str) -> tuple[list[str], str] | None:
    """The probe split of a JSONL prompts file's skill: its own rows with ``"split": "probe"``,
    else (rows naming one ``skill`` and no probe rows) the shipped ``prompts/<skill>.jsonl``'s
    probe rows. ``(prompts, where)``, or None (text lines, no skill, nothing found)."""
    p = Path(path)
    try:
        rows = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("prompt"), str)]
    own = [r["prompt"] for r in rows if r.get("split") == "probe"]
    if own:
        return own, f"the probe split of {p.name} ({len(own)} prompts)"
    skills = {r.get("skill") for r in rows}
    if len(skills) != 1 or not isinstance(next(iter(skills)), str):
        return None
    skill = next(iter(skills))
    from neurolens.resources import prompts_dir
    shipped = prompts_dir() / f"{skill}.jsonl"
    if not shipped.is_file() or shipped.resolve() == p.resolve():
        return None
    got = probe_split(str(shipped))
    return None if got is None else (got[0], f"the {skill} skill's probe split "
                                              f"({len(got[0])} prompts)")
