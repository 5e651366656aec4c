"""The dashboard's "Build index" bar as data (no Qt): the button's text for the state of the
loaded model's index, the line under the progress bar (tokens done of the total and the time
left, from the rate since this build started), and the index's one-line summary."""

from __future__ import annotations

import os

#: the button's text per state of the user index (none | partial | complete)
BUTTON = {"none": "Build index…", "partial": "Resume index", "complete": "Extend index…"}


def button_text(state: str) -> str:
    return BUTTON.get(state, BUTTON["none"])


def seconds_left(done: int, total: int, base: int, elapsed: float) -> float | None:
    """Seconds until ``total`` at the rate since the build started (``base`` tokens were done
    then, ``elapsed`` seconds ago); None until there is a rate to go by."""
    if elapsed <= 0.2 or done <= base:
        return None
    return max(0.0, (total - done) * elapsed / (done - base))


def duration_text(s: float) -> str:
    if s < 60:
        return f"{max(1, round(s))} s"
    m = round(s / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60} min"


def progress_text(done: int, total: int, left: float | None) -> str:
    """E.g. ``1,234 / 50,000 tokens · about 40 s left``."""
    eta = "estimating the time left…" if left is None else f"about {duration_text(left)} left"
    return f"{done:,} / {total:,} tokens · {eta}"


def _where(folder: str | None, user_folder: str) -> str:
    if not folder:
        return ""
    if os.path.normpath(folder) == os.path.normpath(user_folder):
        return "in your data folder"
    return "beside the model" if os.path.basename(folder.rstrip("/\\")) == "index" else folder


def status_text(info: dict) -> str:
    """The bar's line when no build runs: what the index holds, or what "Build" would do."""
    if info.get("error"):
        return info["error"]
    st = info.get("state", "none")
    if st == "partial":
        return (f"partial index: {info['n_docs']:,} of {info['total_docs']:,} documents, "
                f"{info['n_tokens']:,} tokens; Resume continues after them")
    if st == "complete":
        return (f"index {_where(info['folder'], info['folder'])}: {info['n_docs']:,} documents, "
                f"{info['n_tokens']:,} tokens")
    if info.get("found"):
        return f"using the index {_where(info['found'], info.get('folder', ''))}"
    return "no index yet: Build index streams a corpus through the model"


def done_text(r: dict) -> str:
    return (f"index built: {r['n_docs']:,} documents, {r['n_tokens']:,} tokens "
            f"in {duration_text(r['seconds'])}")


def default_label(paths: list[str], demo: bool) -> str:
    """The menu entry of the corpus offered first."""
    if demo:
        return "Index the demo corpus (prompt sets + training sample)"
    names = ", ".join(os.path.basename(p) for p in paths[:2])
    return f"Index the corpus of the shipped index ({names})"
