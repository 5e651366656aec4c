"""The edit list behind the edit panel, with undo/redo of every change (no Qt here).

Each change stores a snapshot of the whole list; edit lists are small, so snapshots are cheap
and undo can never drift out of sync with what the user saw.
"""

from __future__ import annotations

import copy

from neurolens.spec.edits import EditOp, EditSet


class EditModel:
    def __init__(self, limit: int = 200):
        self.ops: list[EditOp] = []
        self._undo: list[tuple[str, list[EditOp]]] = []
        self._redo: list[tuple[str, list[EditOp]]] = []
        self.limit = limit
        self.version = 0

    def _snap(self) -> list[EditOp]:
        return [copy.deepcopy(o) for o in self.ops]

    def _change(self, label: str, fn) -> None:
        self._undo.append((label, self._snap()))
        del self._undo[: -self.limit]
        self._redo.clear()
        fn()
        self.version += 1

    # -- changes -----------------------------------------------------------------------------------
    def add(self, ops: list[EditOp], label: str = "add edit") -> None:
        self._change(label, lambda: self.ops.extend(ops))

    def remove(self, index: int) -> None:
        self._change("remove edit", lambda: self.ops.pop(index))

    def set_enabled(self, index: int, enabled: bool) -> None:
        if self.ops[index].enabled == enabled:
            return

        def fn():
            self.ops[index].enabled = enabled
        self._change("enable edit" if enabled else "disable edit", fn)

    def set_note(self, index: int, note: str) -> None:
        def fn():
            self.ops[index].note = note
        self._change("edit note", fn)

    def replace_all(self, ops: list[EditOp], label: str = "load edits") -> None:
        def fn():
            self.ops[:] = ops
        self._change(label, fn)

    # -- history -----------------------------------------------------------------------------------
    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> str | None:
        if not self._undo:
            return None
        label, snap = self._undo.pop()
        self._redo.append((label, self._snap()))
        self.ops = snap
        self.version += 1
        return label

    def redo(self) -> str | None:
        if not self._redo:
            return None
        label, snap = self._redo.pop()
        self._undo.append((label, self._snap()))
        self.ops = snap
        self.version += 1
        return label

    def edit_set(self) -> EditSet:
        return EditSet([copy.deepcopy(o) for o in self.ops])

    def enabled_set(self) -> EditSet | None:
        es = EditSet([copy.deepcopy(o) for o in self.ops if o.enabled])
        return es if len(es) else None
