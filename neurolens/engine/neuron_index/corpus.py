"""Corpus readers for the neuron index: a text file (one document per non-empty line), JSONL
(one document per line, its ``"text"`` field) or a folder of ``.txt`` files (one document per
file, in sorted path order). Documents are numbered in that order, so a number names the same
text in every later read of an unchanged source; the index stores only (document, position)
pairs and reads the texts back for its dashboards.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from neurolens.errors import InputError

KINDS = ("lines", "jsonl", "folder")
_SNIFF = 1 << 16


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "lines"


def _check_text(path: Path) -> None:
    """One clear line for a file that is not UTF-8 text (an image, a checkpoint, ...)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if b"\0" in head:
        raise InputError(f"corpus file {path} is not text (it contains NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:   # not just a character cut at the sniff boundary
            raise InputError(f"corpus file {path} is not UTF-8 text") from None


def _decode(raw: bytes, path: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"corpus file {path}{where} is not UTF-8 text") from None


@dataclass
class Source:
    """One corpus source; ``doc(i)`` reads document ``i`` back (byte offsets kept after the
    first scan, so a dashboard seeks instead of rereading the file)."""

    path: Path
    kind: str = ""
    _offsets: array | None = field(default=None, repr=False)
    _files: list[Path] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.path = Path(self.path)
        if not self.path.exists():
            raise InputError(f"corpus not found: {self.path}")
        self.kind = self.kind or _kind_of(self.path)
        if self.kind not in KINDS:
            raise InputError(f"unknown corpus kind '{self.kind}' (choose from {', '.join(KINDS)})")
        if self.kind != "folder":
            if not self.path.is_file():
                raise InputError(f"corpus {self.path} is not a file")
            _check_text(self.path)

    # -- reading -----------------------------------------------------------------------------
    def _folder_files(self) -> list[Path]:
        if self._files is None:
            self._files = sorted((p for p in self.path.rglob("*.txt") if p.is_file()),
                                 key=lambda p: p.relative_to(self.path).as_posix())
        return self._files

    def _parse(self, raw: bytes, lineno: int) -> str | None:
        """The document of one line, or None for a blank line."""
        if not raw.strip():
            return None
        if self.kind == "lines":
            return _decode(raw.rstrip(b"\r\n"), self.path, f" (line {lineno})")
        text = _decode(raw, self.path, f" (line {lineno})")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{self.path}, line {lineno}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"{self.path}, line {lineno}: expected an object with a string "
                             "'text' field")
        return obj["text"]

    def docs(self) -> Iterator[str]:
        """Every document in order (and the byte offsets of the lines, for ``doc``)."""
        if self.kind == "folder":
            for p in self._folder_files():
                _check_text(p)
                yield _decode(p.read_bytes(), p, "")
            return
        offsets = array("q")
        with open(self.path, "rb") as f:
            pos = 0
            for lineno, raw in enumerate(f, 1):
                doc = self._parse(raw, lineno)
                if doc is not None:
                    offsets.append(pos)
                    yield doc
                pos += len(raw)
        self._offsets = offsets

    def count(self) -> int:
        """Number of documents (one scan of a file, which also records the offsets)."""
        if self.kind == "folder":
            return len(self._folder_files())
        if self._offsets is None:
            for _ in self.docs():
                pass
        return len(self._offsets)

    def doc(self, i: int) -> str:
        if self.kind == "folder":
            files = self._folder_files()
            if not 0 <= i < len(files):
                raise InputError(f"document {i} is not in {self.path} ({len(files)} files)")
            return _decode(files[i].read_bytes(), files[i], "")
        if self._offsets is None:
            self.count()
        if not 0 <= i < len(self._offsets):
            raise InputError(f"document {i} is not in {self.path} ({len(self._offsets)} "
                             "documents): the corpus changed since the index was built")
        with open(self.path, "rb") as f:
            f.seek(self._offsets[i])
            doc = self._parse(f.readline(), -1)
        return doc or ""


class TextHash:
    """Running digest of a source's documents in order (to notice a source that changed under
    an index)."""

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=12)

    def update(self, text: str) -> None:
        b = text.encode("utf-8")
        self._h.update(len(b).to_bytes(8, "little"))
        self._h.update(b)

    def hexdigest(self) -> str:
        return self._h.copy().hexdigest()


def text_hash(texts) -> str:
    h = TextHash()
    for t in texts:
        h.update(t)
    return h.hexdigest()


def as_paths(corpus) -> list[Path]:
    """A corpus argument (a path, or a list of paths) as paths."""
    if isinstance(corpus, (str, Path)):
        return [Path(corpus)]
    paths = [Path(c) for c in corpus]
    if not paths:
        raise InputError("no corpus given")
    return paths


def source_path(entry: dict, folder: Path) -> Path:
    """Where a source of an index lies now: relative to the index folder first (an index moved
    with its corpus), else its absolute path at build time."""
    rel = Path(folder) / entry.get("rel", "")
    return rel if entry.get("rel") and rel.exists() else Path(entry["path"])
