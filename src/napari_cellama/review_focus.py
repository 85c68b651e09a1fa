"""Which reference cells the review asks the plots to show (Qt-free, one per session).

The evidence panel of the "4. Review" dock writes the rows (in the transfer's reference
embeddings) of a cell's nearest reference cells; the plots dock listens and highlights them
on the UMAP. Neither dock calls the other: both talk to this object, which lives as long as
the session it belongs to.
"""

from __future__ import annotations

import weakref

import numpy as np
from psygnal import Signal


class ReferenceFocus:
    """Reference rows to highlight (``changed(rows, title)``; ``rows`` None clears)."""

    changed = Signal(object, str)

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None
        self.title = ""

    def show(self, rows, title: str = "") -> None:
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.title = title
        self.changed.emit(self.rows, title)

    def clear(self) -> None:
        self.show(None)


_FOCUS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def reference_focus(session) -> ReferenceFocus:
    """The :class:`ReferenceFocus` of ``session`` (made on first use)."""
    focus = _FOCUS.get(session)
    if focus is None:
        focus = _FOCUS[session] = ReferenceFocus()
    return focus
