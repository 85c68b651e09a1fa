"""The uncertainty review queue: the cells to look at first, in order (Qt-free).

Cells are ordered by uncertainty, highest first: ``max(1 - confidence, unknown_score)``
(a low vote share, or a cell the Unknown call finds far from every reference type), ties by
cell id; cells without any detected shared gene (Unassigned, nothing to compare) are left out. :class:`ReviewQueue` walks that order (``next`` / ``previous``), skipping cells
already reviewed, and counts reviewed / remaining; filters narrow it to one label (the
current label), one region (a set of cell ids, e.g. the selection) or cells below a
confidence. Every decision is an :class:`~napari_cellama.core.Annotation` edit (accept:
``mark_reviewed``; reassign: ``assign(..., reason="review", review=True)``), so undo works
and the queue's counts follow the annotation.

:meth:`ReviewQueue.set_grouping` walks the queue in small spatially contiguous groups instead:
the most uncertain cell not yet grouped, then the queue's other cells within ``radius`` (µm)
of it (at most ``max_cells``, most uncertain first), then the next group; a reviewer judges
neighbouring cells together, and the camera only moves once per group.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .._constants import CONFIDENCE, REASON_NO_GENES, UNASSIGNED_REASON, UNKNOWN_SCORE

STAGE_GROUP_QUEUE = "grouping the review queue"
_GROUP_STEP = 2000
"""Fewest cells grouped between two progress steps (a worker can stop there); at most about ten
steps in all (each step repaints the dock's progress bars on the GUI thread)."""


class QueueGrouping:
    """Groups computed by :meth:`ReviewQueue.iter_grouping` for the filtered queue ``filtered``."""

    def __init__(self, filtered, xy, radius, max_cells) -> None:
        self.filtered = filtered
        self.xy = xy
        self.radius = radius
        self.max_cells = max_cells
        self.queue: np.ndarray | None = None
        self.group: np.ndarray | None = None


def _group(q: np.ndarray, pts: np.ndarray, radius: float, max_cells: int):
    """``(queue order, group of each)`` of the queue positions ``q`` at ``pts`` (generator)."""
    from scipy.spatial import cKDTree

    ok = np.isfinite(pts).all(axis=1)
    valid = np.flatnonzero(ok)
    tree = cKDTree(pts[ok]) if len(valid) else None
    position = valid.tolist()  # tree point -> queue position
    finite = ok.tolist()
    taken = [False] * len(q)  # plain lists: a group holds a few cells, numpy per cell costs more
    order: list = []
    groups: list = []
    g = 0
    step = max(_GROUP_STEP, -(-len(q) // 10))
    for start in range(0, len(q), step):
        yield STAGE_GROUP_QUEUE, start, len(q)
        stop = min(len(q), start + step)
        chunk = valid[(valid >= start) & (valid < stop)]
        found = tree.query_ball_point(pts[chunk], radius) if len(chunk) else []
        near_of = dict(zip(chunk.tolist(), found, strict=True))
        for i in range(start, stop):  # queue order = uncertainty order: each untaken cell seeds a group
            if taken[i]:
                continue
            members = [i]
            if finite[i]:
                near = sorted(position[k] for k in near_of[i])
                members += [j for j in near if j != i and not taken[j]][: max_cells - 1]
            for j in members:
                taken[j] = True
            order += members
            groups += [g] * len(members)
            g += 1
    yield STAGE_GROUP_QUEUE, len(q), len(q)
    return q[np.asarray(order, dtype=np.int64)], np.asarray(groups, dtype=np.int64)


def uncertainty(table: pd.DataFrame) -> pd.Series:
    """``max(1 - confidence, unknown_score)`` per cell (0..1, higher = look first)."""
    u = 1.0 - pd.to_numeric(table[CONFIDENCE], errors="coerce").fillna(0.0).to_numpy(np.float64)
    if UNKNOWN_SCORE in table:
        s = pd.to_numeric(table[UNKNOWN_SCORE], errors="coerce").fillna(0.0).to_numpy(np.float64)
        u = np.maximum(u, s)
    return pd.Series(np.clip(u, 0.0, 1.0), index=table.index, name="uncertainty")


class ReviewQueue:
    """Cells of one annotation ordered by uncertainty, with filters and a cursor."""

    def __init__(self, annotation, table: pd.DataFrame | None = None):
        self.annotation = annotation
        base = annotation.table if table is None else table
        u = uncertainty(base).reindex(annotation.cell_ids).fillna(0.0)
        ids = np.asarray(u.index, dtype=object).astype(str)
        order = np.lexsort((ids, -u.to_numpy()))
        if UNASSIGNED_REASON in base:  # a cell without any detected shared gene has nothing to review
            empty = (base[UNASSIGNED_REASON].astype(str) == REASON_NO_GENES).reindex(annotation.cell_ids)
            order = order[~empty.fillna(False).to_numpy()[order]]
        self._order = order  # positions in the annotation, most uncertain first
        self._uncertainty = u.to_numpy()
        self._conf = pd.to_numeric(base[CONFIDENCE], errors="coerce").reindex(annotation.cell_ids) \
            .fillna(0.0).to_numpy()
        self.label: str | None = None
        self.region: pd.Index | None = None
        self.below: float | None = None
        self._queue = self._filtered = order
        self._group: np.ndarray | None = None
        self._xy: np.ndarray | None = None
        self.radius: float | None = None
        self.max_cells = 25
        self.position = -1

    # ------------------------------------------------------------------ filters
    def set_filters(self, label: str | None = None, region: Iterable | None = None,
                    below: float | None = None) -> int:
        """Keep only cells of ``label`` (current label), in ``region`` (cell ids), with
        confidence below ``below``; None lifts a filter. Returns the queue's length."""
        self.label = label or None
        self.region = None if region is None else pd.Index(np.asarray(list(region), dtype=object).astype(str))
        self.below = below
        keep = np.ones(len(self._order), bool)
        pos = self._order
        if self.label is not None:
            keep &= self.annotation.cell_type.to_numpy()[pos].astype(str) == self.label
        if self.region is not None:
            keep &= self.annotation.cell_ids[pos].isin(self.region)
        if self.below is not None:
            keep &= self._conf[pos] < float(self.below)
        self._queue = self._filtered = pos[keep]
        self.position = -1
        self._regroup()
        return len(self._queue)

    def set_grouping(self, xy=None, radius: float | None = None, max_cells: int = 25) -> int:
        """Walk in small spatially contiguous groups: ``xy`` the cells' coordinates (rows in the
        annotation's cell order), ``radius`` the group's reach around its most uncertain cell;
        None lifts the grouping. Returns the number of groups (0 without grouping).
        (The sync wrapper of :meth:`iter_grouping` + :meth:`apply_grouping`.)"""
        from ._progress import run

        return self.apply_grouping(run(self.iter_grouping(xy, radius, max_cells)))

    def iter_grouping(self, xy=None, radius: float | None = None, max_cells: int = 25):
        """The groups of :meth:`set_grouping`, computed without touching the queue (a worker may
        run it): yields ``(STAGE_GROUP_QUEUE, cells done, cells)``, returns a
        :class:`QueueGrouping` for :meth:`apply_grouping`."""
        xy = None if xy is None or radius is None else np.asarray(xy, dtype=np.float64)[:, :2]
        grouping = QueueGrouping(self._filtered, xy, None if xy is None else float(radius), max(1, int(max_cells)))
        q = grouping.filtered
        if grouping.radius is None or not len(q):
            return grouping
        grouping.queue, grouping.group = yield from _group(q, xy[q], grouping.radius, grouping.max_cells)
        return grouping

    def apply_grouping(self, grouping: QueueGrouping) -> int:
        """Take the groups of :meth:`iter_grouping` (cursor back to the start); returns the number
        of groups, or -1 when the filters changed since (nothing applied: group again)."""
        if grouping.filtered is not self._filtered:
            return -1
        self._xy, self.radius, self.max_cells = grouping.xy, grouping.radius, grouping.max_cells
        self.position = -1
        if grouping.group is None:
            self._queue, self._group = self._filtered, None
            return 0
        self._queue, self._group = grouping.queue, grouping.group
        return self.n_groups

    def _regroup(self) -> None:
        from ._progress import run

        self._queue, self._group = self._filtered, None
        if self.radius is not None and self._xy is not None:
            self.apply_grouping(run(self.iter_grouping(self._xy, self.radius, self.max_cells)))

    def group_at(self, position: int | None = None) -> int | None:
        """The group (0, 1, ...) of the cell at ``position`` (default: the cursor); None
        without grouping or off the queue."""
        i = self.position if position is None else position
        if self._group is None or not 0 <= i < len(self._group):
            return None
        return int(self._group[i])

    @property
    def n_groups(self) -> int:
        return 0 if self._group is None else int(self._group.max(initial=-1)) + 1

    # ------------------------------------------------------------------ counts
    def __len__(self) -> int:
        return len(self._queue)

    @property
    def cell_ids(self) -> pd.Index:
        """The queue's cells in order (filters applied)."""
        return self.annotation.cell_ids[self._queue]

    def counts(self) -> tuple[int, int]:
        """``(reviewed, remaining)`` among the queue's cells."""
        rev = self.annotation.reviewed.to_numpy()[self._queue]
        n = int(rev.sum())
        return n, len(self._queue) - n

    @property
    def current(self) -> str | None:
        """The cell the cursor is on (None before the first ``next``)."""
        if 0 <= self.position < len(self._queue):
            return str(self.annotation.cell_ids[self._queue[self.position]])
        return None

    def uncertainty_of(self, cell_id: str) -> float:
        i = self.annotation.cell_ids.get_indexer([str(cell_id)])[0]
        return float(self._uncertainty[i]) if i >= 0 else float("nan")

    # ------------------------------------------------------------------ walking
    def next(self, skip_reviewed: bool = True) -> str | None:
        """Move to the next cell (not yet reviewed unless ``skip_reviewed=False``); None at the end."""
        return self._step(+1, skip_reviewed)

    def previous(self, skip_reviewed: bool = False) -> str | None:
        """Move back one cell (reviewed ones included, to revisit a decision)."""
        return self._step(-1, skip_reviewed)

    def peek(self, skip_reviewed: bool = True) -> str | None:
        """The cell :meth:`next` would move to, without moving (None at the end)."""
        i = self._find(+1, skip_reviewed)
        return None if i is None else str(self.annotation.cell_ids[self._queue[i]])

    def _step(self, step: int, skip_reviewed: bool) -> str | None:
        i = self._find(step, skip_reviewed)
        if i is None:
            return None
        self.position = i
        return self.current

    def _find(self, step: int, skip_reviewed: bool) -> int | None:
        rev = self.annotation._reviewed if skip_reviewed else None  # noqa: SLF001 (read-only, no copy)
        i = self.position + step
        while 0 <= i < len(self._queue):
            if rev is None or not rev[self._queue[i]]:
                return i
            i += step
        return None

    def go_to(self, cell_id: str) -> bool:
        """Put the cursor on ``cell_id`` if it is in the queue."""
        hit = np.flatnonzero(self.annotation.cell_ids[self._queue] == str(cell_id))
        if len(hit):
            self.position = int(hit[0])
            return True
        return False
