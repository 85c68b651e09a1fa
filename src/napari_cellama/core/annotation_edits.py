"""Manual edits of an :class:`~napari_cellama.core.Annotation`: assign, clear, undo / redo, history.

A manual label (``source`` = ``manual``) overrides the transferred label whatever the
threshold. Each change is one :class:`Edit` (the cells, their manual labels before, the new
one) kept for undo (the last ``max_history``) and redo, and written to a saved session as
JSON records (:meth:`EditsMixin.history_records`). Qt-free.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..validators import CellamaInputError

# edit kinds recorded in the history
EDIT_ASSIGN = "assign"
EDIT_CLEAR = "clear"
EDIT_REVIEW = "review"
KEEP = -2
"""``Edit.after`` of an edit that only marks cells reviewed (their labels stay)."""
DEFAULT_REASON = "manual"


@dataclass
class Edit:
    """One manual edit: the cells it touched, their manual labels before, and the new one.

    ``before`` / ``after`` are category codes into :attr:`Annotation.categories`
    (-1 = no manual label, i.e. the transferred label applies).
    """

    positions: np.ndarray
    before: np.ndarray
    after: int
    kind: str = EDIT_ASSIGN
    time: str = field(default_factory=lambda: _dt.datetime.now().isoformat(timespec="seconds"))
    reason: str = DEFAULT_REASON
    """Why the label was set (``review``, ``polygon``, ``cluster``, ``carried``, ...)."""
    reasons_before: np.ndarray | None = None
    """Manual-label reasons of the cells before (None = no manual label)."""
    reviewed_before: np.ndarray | None = None
    """Reviewed flags before, when this edit marked the cells reviewed (else None)."""

    def __len__(self) -> int:
        return len(self.positions)


def clean_name(cell_type) -> str:
    """A type name as the user typed it, stripped; an empty one is an input error."""
    name = str(cell_type).strip() if cell_type is not None else ""
    if not name:
        raise CellamaInputError("give the cell type a name")
    return name


class EditsMixin:
    """Manual edits and their history (mixed into :class:`~napari_cellama.core.Annotation`)."""

    # ------------------------------------------------------------------ edits
    def _positions(self, cell_ids) -> np.ndarray:
        ids = pd.Index(np.atleast_1d(np.asarray(cell_ids, dtype=object)).astype(str))
        pos = self._base.index.get_indexer(ids)
        if (pos < 0).any():
            bad = ids[pos < 0]
            raise CellamaInputError(
                f"{len(bad)} selected cell id(s) are not in this annotation (e.g. {bad[0]!r})"
            )
        return np.unique(pos)

    def positions_of_labels(self, label_ids) -> np.ndarray:
        """Table rows of the cells with these Labels-raster ids (unknown ids are ignored)."""
        if self._labels is None:
            raise CellamaInputError("label ids are not set; call set_label_ids first")
        lab = np.asarray(label_ids, dtype=np.int64).ravel()
        order = np.argsort(self._labels)
        sorted_labels = self._labels[order]
        i = np.searchsorted(sorted_labels, lab)
        i = np.clip(i, 0, len(sorted_labels) - 1)
        hit = sorted_labels[i] == lab
        return np.unique(order[i[hit]])

    def cell_ids_of_labels(self, label_ids) -> pd.Index:
        """Cell ids of Labels-raster ids (e.g. the cells inside a lasso); unknown ids ignored."""
        return self._base.index[self.positions_of_labels(label_ids)]

    def assign(self, cell_ids, cell_type: str, *, reason: str = DEFAULT_REASON,
               review: bool = False) -> Edit | None:
        """Label ``cell_ids`` as ``cell_type`` (an existing or a new name); source becomes manual.

        ``reason`` (``review``, ``polygon``, ``cluster``, ...) is kept per cell as its
        ``label_source`` (``manual:<reason>``) and in the edit history; ``review`` also marks
        the cells reviewed (undone with the edit). Returns the recorded :class:`Edit`, or
        None when nothing changed. Clears redo.
        """
        name = clean_name(cell_type)
        pos = self._positions(cell_ids)
        if name not in self._code:
            self._register(name)
            self._emit("types")
        code = self._code[name]
        return self._apply_new(pos, code, EDIT_ASSIGN, reason=clean_name(reason), review=review)

    def clear_manual(self, cell_ids) -> Edit | None:
        """Drop the manual label of ``cell_ids``: the transferred label applies again."""
        return self._apply_new(self._positions(cell_ids), -1, EDIT_CLEAR)

    def mark_reviewed(self, cell_ids, *, reason: str = "review") -> Edit | None:
        """Mark ``cell_ids`` reviewed, keeping their labels (an undoable edit; None if all were)."""
        return self._apply_new(self._positions(cell_ids), KEEP, EDIT_REVIEW, reason=clean_name(reason),
                               review=True)

    @property
    def reviewed(self) -> pd.Series:
        """True for the cells a person reviewed (accepted or reassigned in the review queue)."""
        return pd.Series(self._reviewed.copy(), index=self._base.index, name="reviewed")

    def _apply_new(self, pos: np.ndarray, code: int, kind: str, *, reason: str = DEFAULT_REASON,
                   review: bool = False) -> Edit | None:
        before = self._manual[pos].copy()
        was_reviewed = self._reviewed[pos].copy()
        changed = np.zeros(len(pos), bool) if code == KEEP else before != code
        if code >= 0:
            changed |= self._reason[pos] != reason
        if review:
            changed |= ~was_reviewed
        if not changed.any():
            return None
        pos = pos[changed]
        edit = Edit(pos, before[changed], int(code), kind, reason=reason,
                    reasons_before=self._reason[pos].copy(),
                    reviewed_before=was_reviewed[changed] if review else None)
        self._do(edit)
        self._undo.append(edit)
        if len(self._undo) > self.max_history:
            from .provenance import edit_step

            n_old = len(self._undo) - self.max_history
            # an edit that leaves the undo stack is still in effect: provenance keeps it
            self._steps.extend(edit_step(self._record(e)) for e in self._undo[:n_old])
            del self._undo[:n_old]
        self._redo.clear()
        self._emit("edit")
        return edit

    def _do(self, edit: Edit) -> None:
        if edit.after != KEEP:
            self._manual[edit.positions] = edit.after
            self._reason[edit.positions] = edit.reason if edit.after >= 0 else None
        if edit.reviewed_before is not None:
            self._reviewed[edit.positions] = True
        self._update_codes()

    def _undo_one(self, edit: Edit) -> None:
        self._manual[edit.positions] = edit.before
        if edit.reasons_before is not None:
            self._reason[edit.positions] = edit.reasons_before
        if edit.reviewed_before is not None:
            self._reviewed[edit.positions] = edit.reviewed_before
        self._update_codes()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def n_undo(self) -> int:
        return len(self._undo)

    @property
    def n_redo(self) -> int:
        return len(self._redo)

    def undo(self) -> Edit | None:
        """Revert the last edit (None if there is nothing to undo)."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._undo_one(edit)
        self._redo.append(edit)
        self._emit("undo")
        return edit

    def redo(self) -> Edit | None:
        """Re-apply the last undone edit (None if there is nothing to redo)."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        self._do(edit)
        self._undo.append(edit)
        self._emit("redo")
        return edit

    def describe(self, edit: Edit) -> str:
        """One line for a status bar, e.g. ``12 cells -> B cell``."""
        n = len(edit)
        cells = f"{n} cell{'s' if n != 1 else ''}"
        if edit.after == KEEP:
            return f"{cells} marked reviewed"
        if edit.after < 0:
            return f"{cells} back to the transferred label"
        return f"{cells} -> {self._categories[edit.after]}"

    def _record(self, edit: Edit) -> dict:
        names = np.asarray(self._categories + [None], dtype=object)
        return {
            "kind": edit.kind,
            "time": edit.time,
            "cell_ids": [str(c) for c in self._base.index[edit.positions]],
            "before": names[edit.before].tolist(),  # -1 -> None (no manual label)
            "after": None if edit.after < 0 else self._categories[edit.after],
            "keep_labels": edit.after == KEEP,
            "reason": edit.reason,
            "reasons_before": None if edit.reasons_before is None else edit.reasons_before.tolist(),
            "reviewed_before": None if edit.reviewed_before is None else edit.reviewed_before.tolist(),
        }

    def _edit_from_record(self, rec: dict) -> Edit:
        pos = self._base.index.get_indexer(pd.Index([str(c) for c in rec["cell_ids"]]))
        if (pos < 0).any():
            raise CellamaInputError("the saved edit history names cells that are not in the table")
        before = np.array([-1 if b is None else self._register(str(b)) for b in rec["before"]], dtype=np.int32)
        after = -1 if rec.get("after") is None else self._register(str(rec["after"]))
        if rec.get("keep_labels"):
            after = KEEP
        reasons = rec.get("reasons_before")
        reviewed = rec.get("reviewed_before")
        return Edit(pos.astype(np.int64), before, after, rec.get("kind", EDIT_ASSIGN), rec.get("time", ""),
                    reason=rec.get("reason", DEFAULT_REASON),
                    reasons_before=None if reasons is None else np.asarray(reasons, dtype=object),
                    reviewed_before=None if reviewed is None else np.asarray(reviewed, dtype=bool))

    def history_records(self) -> list[dict]:
        """The undo stack, oldest first, as JSON-serialisable dicts
        (``kind``, ``time``, ``cell_ids``, ``before`` (None = no manual label), ``after``)."""
        return [self._record(e) for e in self._undo]

    def redo_records(self) -> list[dict]:
        """The redo stack as JSON-serialisable dicts (same shape as :meth:`history_records`)."""
        return [self._record(e) for e in self._redo]
