"""Review state of a label transfer: threshold, manual edits, undo/redo, colours, filters.

:class:`Annotation` wraps the per-cell table of :func:`napari_cellama.core.run_transfer`
(index: cell id; ``transferred_type``, ``confidence``, ``distance`` ...) and keeps what a
biologist changes while reviewing it:

* an ``Unassigned`` threshold (minimum confidence and/or maximum distance) applied live
  with :func:`napari_cellama.core.transfer.apply_threshold` (no embedding is touched);
* manual labels (``source`` = ``manual``) that override the transferred label whatever the
  threshold, with undo / redo of the last :data:`DEFAULT_UNDO_DEPTH` edits;
* one stable colour per type: types get palette colours in the order they are first
  seen, so adding a type never changes the colour of another; ``Unassigned`` is grey;
* per-type visibility ("show only", hide, show all) for the Labels layer.

Every per-cell quantity is a numpy array aligned with the table rows; colours reach a
napari Labels layer as a lookup table indexed by label id (``lut[label_id] -> RGBA``),
built with one fancy-indexing pass, so recolouring 100k cells costs milliseconds.
Nothing here imports Qt or napari.
"""

from __future__ import annotations

import colorsys
import datetime as _dt
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_UNDO_DEPTH,
    DISTANCE,
    LABEL_ID,
    NEAREST_REFERENCE,
    NICHE_CLUSTER,
    RUNNER_UP,
    SENTENCE,
    SOURCE,
    SOURCE_MANUAL,
    SOURCE_TRANSFERRED,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_COLOR,
    UNKNOWN,
)
from ..validators import CellamaInputError
from .transfer import apply_threshold

# tab10 and tab20 (greys left out and the palest lilac deepened, so that no type looks
# Unassigned), then tab20b darks
_BASE_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#b39ddb", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)

TRANSPARENT = np.zeros(4, dtype=np.float32)

RGBA = tuple  # (r, g, b, a) floats in [0, 1]

# edit kinds recorded in the history
EDIT_ASSIGN = "assign"
EDIT_CLEAR = "clear"


def palette_color(i: int) -> tuple[float, float, float, float]:
    """The ``i``-th colour of the deterministic type palette (RGBA floats).

    The first 24 are fixed, well separated colours; after that hues step by the golden
    angle with alternating saturation and value, so colours never repeat and never grey.
    """
    if i < 0:
        raise ValueError("palette index must be >= 0")
    if i < len(_BASE_PALETTE):
        return to_rgba(_BASE_PALETTE[i])
    j = i - len(_BASE_PALETTE)
    hue = (0.11 + j * 0.6180339887) % 1.0
    sat = (0.55, 0.9, 0.75)[j % 3]
    val = (0.9, 0.7)[(j // 3) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (float(r), float(g), float(b), 1.0)


def to_rgba(color) -> tuple[float, float, float, float]:
    """``#rgb``, ``#rrggbb``, ``#rrggbbaa`` or a 3/4-sequence of floats in [0, 1] -> RGBA tuple."""
    if isinstance(color, str):
        h = color.strip().lstrip("#")
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        if len(h) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in h):
            raise CellamaInputError(f"colour {color!r} is not a #rrggbb hex colour")
        vals = [int(h[k:k + 2], 16) / 255.0 for k in range(0, len(h), 2)]
        if len(vals) == 3:
            vals.append(1.0)
        return tuple(float(v) for v in vals)  # type: ignore[return-value]
    vals = [float(v) for v in color]
    if len(vals) == 3:
        vals.append(1.0)
    if len(vals) != 4 or any(not 0.0 <= v <= 1.0 for v in vals):
        raise CellamaInputError(f"colour {color!r} must be 3 or 4 numbers between 0 and 1")
    return tuple(vals)  # type: ignore[return-value]


def to_hex(color, alpha: bool = False) -> str:
    """RGBA (floats) or hex -> ``#rrggbb`` (``#rrggbbaa`` with ``alpha=True``)."""
    rgba = to_rgba(color)
    n = 4 if alpha else 3
    return "#" + "".join(f"{int(round(v * 255)):02x}" for v in rgba[:n])


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

    def __len__(self) -> int:
        return len(self.positions)


class Annotation:
    """Review state over the per-cell table of a transfer run.

    Parameters
    ----------
    table
        Per-cell transfer table indexed by cell id, with at least ``transferred_type``,
        ``confidence`` and ``distance`` (``runner_up``, ``nearest_reference``,
        ``sentence`` and ``niche_cluster`` are kept when present). If it has a
        ``source`` column (a table written by this class), cells whose source is
        ``manual`` keep their ``cell_type`` as a manual label: an exported table
        restores its edits.
    min_confidence, max_distance
        Initial ``Unassigned`` threshold.
    colors
        ``{type: colour}`` to reuse (e.g. from a saved session); types listed here come
        first in :attr:`categories`, in this order, and keep these colours.
    types
        Extra type names to register up front (e.g. every label of the reference), in
        order, so that their colours are fixed before they appear.
    label_ids
        Integer id of each cell in the Labels raster (array aligned with ``table`` or a
        Series indexed by cell id). Defaults to the table's ``label`` column if any.
    hidden
        Types hidden at start.
    history, redo
        Edit records (see :meth:`history_records`) to restore the undo / redo stacks.
    max_history
        Edits kept for undo (at least 20).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        min_confidence: float = 0.0,
        max_distance: float | None = None,
        colors: dict | None = None,
        types: Iterable[str] | None = None,
        label_ids=None,
        hidden: Iterable[str] | None = None,
        history: Sequence[dict] | None = None,
        redo: Sequence[dict] | None = None,
        max_history: int = DEFAULT_UNDO_DEPTH,
    ):
        _check_table(table)
        if int(max_history) < 20:
            raise CellamaInputError(f"keep at least 20 edits for undo, got max_history={max_history}")
        self.max_history = int(max_history)
        base = table.copy()
        base.index = pd.Index(base.index.astype(str), name=CELL_ID)
        self._base = base
        self._n = len(base)

        # ---- categories: Unassigned first, then saved colours, extra types, data types
        self._categories: list[str] = [UNASSIGNED]
        self._code: dict[str, int] = {UNASSIGNED: 0}
        self._rgba: list[tuple] = [to_rgba(UNASSIGNED_COLOR)]
        self._n_auto = 0  # palette colours handed out so far
        if colors:
            for name, col in colors.items():
                self._register(str(name), col)
        for name in types or ():
            self._register(str(name))
        transferred = base[TRANSFERRED_TYPE].astype(object)
        seen = [str(v) for v in pd.unique(transferred.dropna()) if str(v) != ""]
        extra = []
        if RUNNER_UP in base:
            extra = [str(v) for v in pd.unique(base[RUNNER_UP].dropna()) if str(v) != ""]
        for name in sorted(set(seen) | set(extra)):
            self._register(name)

        t = transferred.where(transferred.notna(), UNASSIGNED).astype(str).to_numpy()
        self._tcodes = self._codes_of(t)

        # ---- manual labels restored from a saved table
        self._manual = np.full(self._n, -1, dtype=np.int32)
        if SOURCE in base and CELL_TYPE in base:
            is_manual = (base[SOURCE].astype(str) == SOURCE_MANUAL).to_numpy()
            if is_manual.any():
                names = base[CELL_TYPE].astype(str).to_numpy()[is_manual]
                for name in pd.unique(names):
                    self._register(str(name))
                self._manual[is_manual] = self._codes_of(names)

        # ---- niche clusters (optional)
        self._niche: pd.Series | None = None
        if NICHE_CLUSTER in base:
            self._niche = _as_category(base[NICHE_CLUSTER])
            self._niche.name = NICHE_CLUSTER

        # ---- label ids
        self._labels: np.ndarray | None = None
        if label_ids is None and LABEL_ID in base:
            label_ids = base[LABEL_ID]
        if label_ids is not None:
            self.set_label_ids(label_ids)

        self._hidden: set[str] = set()
        self._undo: list[Edit] = [self._edit_from_record(r) for r in (history or ())]
        self._redo: list[Edit] = [self._edit_from_record(r) for r in (redo or ())]
        self._callbacks: list[Callable[[str], None]] = []
        self._min_confidence = 0.0
        self._max_distance: float | None = None
        self._thr_codes = self._tcodes
        self._codes = self._tcodes
        self._set_threshold(min_confidence, max_distance)
        if hidden:
            for name in hidden:
                if str(name) in self._code:
                    self._hidden.add(str(name))

    # ------------------------------------------------------------------ categories / colours
    def _register(self, name: str, color=None) -> int:
        name = str(name)
        if name in self._code:
            if color is not None and name != UNASSIGNED:
                self._rgba[self._code[name]] = to_rgba(color)
            return self._code[name]
        if color is None:
            color = palette_color(self._n_auto)
            self._n_auto += 1
        self._code[name] = len(self._categories)
        self._categories.append(name)
        self._rgba.append(to_rgba(color))
        return self._code[name]

    def _codes_of(self, names: np.ndarray) -> np.ndarray:
        """Category codes of an array of registered names (vectorised)."""
        cats = pd.Categorical(np.asarray(names, dtype=object), categories=self._categories)
        codes = np.asarray(cats.codes, dtype=np.int32)
        if (codes < 0).any():
            bad = np.asarray(names, dtype=object)[codes < 0][0]
            raise KeyError(f"type {bad!r} is not registered")
        return codes

    @property
    def categories(self) -> list[str]:
        """Every type known to the session, ``Unassigned`` first; only ever appended to."""
        return list(self._categories)

    @property
    def types(self) -> list[str]:
        """Known types without ``Unassigned`` (the choices for a manual edit)."""
        return self._categories[1:]

    @property
    def colors(self) -> dict[str, tuple]:
        """``{type: (r, g, b, a)}`` for every category, ``Unassigned`` included."""
        return {name: tuple(rgba) for name, rgba in zip(self._categories, self._rgba)}

    @property
    def hex_colors(self) -> dict[str, str]:
        """``{type: '#rrggbb'}`` for every category."""
        return {name: to_hex(rgba) for name, rgba in zip(self._categories, self._rgba)}

    def color_of(self, cell_type: str) -> tuple:
        """RGBA of one type."""
        return tuple(self._rgba[self._code[str(cell_type)]])

    def set_color(self, cell_type: str, color) -> None:
        """Give ``cell_type`` another colour (hex or RGBA); other types keep theirs."""
        if str(cell_type) not in self._code:
            raise CellamaInputError(f"unknown cell type {cell_type!r}")
        self._rgba[self._code[str(cell_type)]] = to_rgba(color)
        self._emit("colors")

    def add_type(self, cell_type: str, color=None) -> None:
        """Register a new type name (gets the next palette colour unless ``color`` is given)."""
        name = _clean_name(cell_type)
        new = name not in self._code
        self._register(name, color)
        if new:
            self._emit("types")

    # ------------------------------------------------------------------ threshold
    @property
    def min_confidence(self) -> float:
        return self._min_confidence

    @property
    def max_distance(self) -> float | None:
        return self._max_distance

    def set_threshold(self, min_confidence: float = 0.0, max_distance: float | None = None) -> None:
        """Relabel as ``Unassigned`` the transferred cells below ``min_confidence`` or beyond
        ``max_distance`` (None: no distance limit). Manual labels are not affected."""
        self._set_threshold(min_confidence, max_distance)
        self._emit("threshold")

    def _set_threshold(self, min_confidence, max_distance) -> None:
        mc = float(min_confidence or 0.0)
        if not np.isfinite(mc) or not 0.0 <= mc <= 1.0:
            raise CellamaInputError(f"minimum confidence must be between 0 and 1, got {min_confidence!r}")
        md = None if max_distance is None else float(max_distance)
        if md is not None and (not np.isfinite(md) or md < 0):
            raise CellamaInputError(f"maximum distance must be a number >= 0, got {max_distance!r}")
        labels = apply_threshold(self._base, mc, md).to_numpy()
        unassigned = labels == UNASSIGNED
        self._thr_codes = np.where(unassigned, 0, self._tcodes).astype(np.int32)
        unknown = labels == UNKNOWN  # issue 14: cells the transfer called Unknown (a category of their own)
        if unknown.any():
            self._thr_codes[unknown] = self._register(UNKNOWN)
        self._min_confidence, self._max_distance = mc, md
        self._update_codes()

    def _update_codes(self) -> None:
        self._codes = np.where(self._manual >= 0, self._manual, self._thr_codes).astype(np.int32)

    # ------------------------------------------------------------------ per-cell values
    @property
    def n_cells(self) -> int:
        return self._n

    @property
    def cell_ids(self) -> pd.Index:
        return self._base.index

    def codes(self) -> np.ndarray:
        """Category code of each cell (index into :attr:`categories`); a read-only view."""
        v = self._codes.view()
        v.flags.writeable = False
        return v

    @property
    def cell_type(self) -> pd.Series:
        """Current label of each cell (threshold and manual edits applied)."""
        cats = pd.Categorical.from_codes(self._codes, categories=self._categories)
        return pd.Series(cats, index=self._base.index, name=CELL_TYPE)

    @property
    def source(self) -> pd.Series:
        """``manual`` where a manual label applies, else ``transferred``."""
        cats = pd.Categorical.from_codes((self._manual >= 0).astype(np.int8),
                                         categories=[SOURCE_TRANSFERRED, SOURCE_MANUAL])
        return pd.Series(cats, index=self._base.index, name=SOURCE)

    @property
    def manual_mask(self) -> np.ndarray:
        return self._manual >= 0

    @property
    def label_ids(self) -> np.ndarray | None:
        """Labels-raster id of each cell (None until :meth:`set_label_ids`)."""
        return None if self._labels is None else self._labels.copy()

    def set_label_ids(self, label_ids) -> None:
        """Set the Labels-raster id of each cell (aligned array or Series indexed by cell id)."""
        if isinstance(label_ids, pd.Series) and not isinstance(label_ids.index, pd.RangeIndex):
            s = label_ids.copy()
            s.index = s.index.astype(str)
            missing = ~self._base.index.isin(s.index)
            if missing.any():
                raise CellamaInputError(
                    f"{int(missing.sum())} cells have no label id (e.g. {self._base.index[missing][0]!r}); "
                    "use the Labels of the same Xenium run"
                )
            values = s.reindex(self._base.index).to_numpy()
        else:
            values = np.asarray(label_ids)
        if values.shape != (self._n,):
            raise CellamaInputError(f"{values.shape[0] if values.ndim else 0} label ids for {self._n} cells")
        if pd.isna(values).any():
            raise CellamaInputError("some cells have no label id; use the Labels of the same Xenium run")
        values = values.astype(np.int64)
        if (values < 1).any():
            raise CellamaInputError("label ids must be >= 1 (0 is the background of a Labels layer)")
        if len(np.unique(values)) != len(values):
            raise CellamaInputError("two cells share a label id; each cell needs its own label")
        self._labels = values
        self._emit("labels")

    @property
    def niche_cluster(self) -> pd.Series | None:
        """Optional niche cluster of each cell (None until set)."""
        return None if self._niche is None else self._niche.copy()

    def set_niche_clusters(self, clusters) -> None:
        """Store a niche cluster per cell (Series indexed by cell id, or aligned array);
        cells without one get NaN. ``None`` removes the column."""
        if clusters is None:
            self._niche = None
        elif isinstance(clusters, pd.Series) and not isinstance(clusters.index, pd.RangeIndex):
            s = clusters.copy()
            s.index = s.index.astype(str)
            if not self._base.index.isin(s.index).any():
                raise CellamaInputError("none of the niche clusters' cell ids is a cell of this annotation")
            s = s.astype(object).where(s.isna(), s.astype(str))  # labels as given, before NaN padding
            self._niche = _as_category(s.reindex(self._base.index))
        else:
            values = np.asarray(clusters, dtype=object)
            if values.shape != (self._n,):
                raise CellamaInputError(f"{len(values)} niche clusters for {self._n} cells")
            self._niche = _as_category(pd.Series(values, index=self._base.index))
        if self._niche is not None:
            self._niche.name = NICHE_CLUSTER
        self._emit("niche")

    @property
    def table(self) -> pd.DataFrame:
        """The per-cell results (a new DataFrame indexed by cell id).

        Columns: ``cell_type``, ``source``, then the transfer columns present
        (``transferred_type``, ``confidence``, ``distance``, ``runner_up``,
        ``nearest_reference``, ``sentence``), ``niche_cluster`` when set, ``label`` when
        label ids are known, then any other column of the input table.
        """
        out = pd.DataFrame(index=self._base.index.copy())
        out[CELL_TYPE] = self.cell_type
        out[SOURCE] = self.source
        for col in (TRANSFERRED_TYPE, CONFIDENCE, DISTANCE, RUNNER_UP, NEAREST_REFERENCE, SENTENCE):
            if col in self._base:
                out[col] = self._base[col].to_numpy()
        if self._niche is not None:
            out[NICHE_CLUSTER] = self._niche.to_numpy()
        if self._labels is not None:
            out[LABEL_ID] = self._labels
        skip = set(out.columns) | {CELL_TYPE, SOURCE, NICHE_CLUSTER, LABEL_ID}
        for col in self._base.columns:
            if col not in skip:
                out[col] = self._base[col].to_numpy()
        return out

    def counts(self, include_empty: bool = False) -> pd.Series:
        """Cells per category, in category order (types without cells left out by default)."""
        n = np.bincount(self._codes, minlength=len(self._categories))
        s = pd.Series(n, index=pd.Index(self._categories, name=CELL_TYPE), name="n_cells")
        return s if include_empty else s[s > 0]

    def cells_of(self, cell_type: str) -> pd.Index:
        """Cell ids currently labelled ``cell_type``."""
        code = self._code.get(str(cell_type))
        if code is None:
            return self._base.index[:0]
        return self._base.index[self._codes == code]

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

    def assign(self, cell_ids, cell_type: str) -> Edit | None:
        """Label ``cell_ids`` as ``cell_type`` (an existing or a new name); source becomes manual.

        Returns the recorded :class:`Edit`, or None when nothing changed. Clears redo.
        """
        name = _clean_name(cell_type)
        pos = self._positions(cell_ids)
        if name not in self._code:
            self._register(name)
            self._emit("types")
        code = self._code[name]
        return self._apply_new(pos, code, EDIT_ASSIGN)

    def clear_manual(self, cell_ids) -> Edit | None:
        """Drop the manual label of ``cell_ids``: the transferred label applies again."""
        return self._apply_new(self._positions(cell_ids), -1, EDIT_CLEAR)

    def _apply_new(self, pos: np.ndarray, code: int, kind: str) -> Edit | None:
        before = self._manual[pos].copy()
        changed = before != code
        if not changed.any():
            return None
        pos, before = pos[changed], before[changed]
        edit = Edit(pos, before, int(code), kind)
        self._manual[pos] = code
        self._update_codes()
        self._undo.append(edit)
        if len(self._undo) > self.max_history:
            del self._undo[: len(self._undo) - self.max_history]
        self._redo.clear()
        self._emit("edit")
        return edit

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
        self._manual[edit.positions] = edit.before
        self._update_codes()
        self._redo.append(edit)
        self._emit("undo")
        return edit

    def redo(self) -> Edit | None:
        """Re-apply the last undone edit (None if there is nothing to redo)."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        self._manual[edit.positions] = edit.after
        self._update_codes()
        self._undo.append(edit)
        self._emit("redo")
        return edit

    def describe(self, edit: Edit) -> str:
        """One line for a status bar, e.g. ``12 cells -> B cell``."""
        n = len(edit)
        cells = f"{n} cell{'s' if n != 1 else ''}"
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
        }

    def _edit_from_record(self, rec: dict) -> Edit:
        pos = self._base.index.get_indexer(pd.Index([str(c) for c in rec["cell_ids"]]))
        if (pos < 0).any():
            raise CellamaInputError("the saved edit history names cells that are not in the table")
        before = np.array([-1 if b is None else self._register(str(b)) for b in rec["before"]], dtype=np.int32)
        after = -1 if rec.get("after") is None else self._register(str(rec["after"]))
        return Edit(pos.astype(np.int64), before, after, rec.get("kind", EDIT_ASSIGN), rec.get("time", ""))

    def history_records(self) -> list[dict]:
        """The undo stack, oldest first, as JSON-serialisable dicts
        (``kind``, ``time``, ``cell_ids``, ``before`` (None = no manual label), ``after``)."""
        return [self._record(e) for e in self._undo]

    def redo_records(self) -> list[dict]:
        """The redo stack as JSON-serialisable dicts (same shape as :meth:`history_records`)."""
        return [self._record(e) for e in self._redo]

    # ------------------------------------------------------------------ visibility
    @property
    def hidden(self) -> frozenset:
        return frozenset(self._hidden)

    def is_visible(self, cell_type: str) -> bool:
        return str(cell_type) not in self._hidden

    def set_visible(self, cell_type: str, visible: bool = True) -> None:
        """Show or hide one type on the tissue."""
        name = str(cell_type)
        if name not in self._code:
            raise CellamaInputError(f"unknown cell type {cell_type!r}")
        if visible:
            self._hidden.discard(name)
        else:
            self._hidden.add(name)
        self._emit("visibility")

    def toggle(self, cell_type: str) -> bool:
        """Flip the visibility of a type; returns the new visibility."""
        visible = not self.is_visible(cell_type)
        self.set_visible(cell_type, visible)
        return visible

    def show_only(self, cell_types) -> None:
        """Hide every type except ``cell_types`` (one name or several)."""
        keep = {str(cell_types)} if isinstance(cell_types, str) else {str(t) for t in cell_types}
        unknown = keep - set(self._code)
        if unknown:
            raise CellamaInputError(f"unknown cell type(s) {', '.join(map(repr, sorted(unknown)))}")
        self._hidden = set(self._categories) - keep
        self._emit("visibility")

    def show_all(self) -> None:
        self._hidden.clear()
        self._emit("visibility")

    # ------------------------------------------------------------------ colour lookups
    def category_rgba(self, apply_visibility: bool = True) -> np.ndarray:
        """``(n_categories, 4)`` float32 colours in category order; hidden types transparent."""
        rgba = np.asarray(self._rgba, dtype=np.float32).reshape(-1, 4)
        if apply_visibility and self._hidden:
            hide = np.fromiter((c in self._hidden for c in self._categories), bool, len(self._categories))
            rgba[hide] = TRANSPARENT
        return rgba

    def cell_rgba(self, apply_visibility: bool = True) -> np.ndarray:
        """``(n_cells, 4)`` float32 colour of each cell (hidden types transparent)."""
        return self.category_rgba(apply_visibility)[self._codes]

    def _require_labels(self) -> np.ndarray:
        if self._labels is None:
            raise CellamaInputError("label ids are not set; call set_label_ids with the Labels ids of the cells")
        return self._labels

    def label_lut(self, apply_visibility: bool = True) -> np.ndarray:
        """``(max_label + 1, 4)`` float32 lookup: ``lut[label_id]`` is that cell's RGBA.

        Row 0 (background) and ids of cells not in this annotation are transparent, and
        so are hidden types. ``lut[labels_raster]`` paints a whole raster in one step.
        """
        labels = self._require_labels()
        lut = np.zeros((int(labels.max()) + 1, 4), dtype=np.float32)
        lut[labels] = self.cell_rgba(apply_visibility)
        return lut

    def label_color_dict(self, apply_visibility: bool = True) -> dict:
        """``{label_id: RGBA, None: transparent}`` for ``napari.utils.DirectLabelColormap``."""
        labels = self._require_labels()
        d = dict(zip(labels.tolist(), self.cell_rgba(apply_visibility)))
        d[None] = TRANSPARENT.copy()
        return d

    def label_code_lut(self) -> np.ndarray:
        """``(max_label + 1,)`` int32 lookup ``label_id -> category code + 1`` (0: no cell).

        ``label_code_lut()[labels_raster]`` gives a raster of types whose colours are just
        :meth:`type_color_dict` (a handful of entries), so showing / hiding a type only
        swaps that small colormap.
        """
        labels = self._require_labels()
        lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
        lut[labels] = self._codes + 1
        return lut

    def type_color_dict(self, apply_visibility: bool = True) -> dict:
        """``{category code + 1: RGBA, None: transparent}``, the colormap of a type raster."""
        rgba = self.category_rgba(apply_visibility)
        d = {i + 1: rgba[i] for i in range(len(rgba))}
        d[None] = TRANSPARENT.copy()
        return d

    def value_lut(self, column: str, fill: float = np.nan) -> np.ndarray:
        """``(max_label + 1,)`` float32 lookup ``label_id -> value`` of a numeric column
        (``confidence``, ``distance``); background and unknown ids get ``fill``."""
        labels = self._require_labels()
        if column not in self._base:
            raise CellamaInputError(f"no column {column!r} in the transfer table")
        lut = np.full(int(labels.max()) + 1, fill, dtype=np.float32)
        lut[labels] = pd.to_numeric(self._base[column], errors="coerce").to_numpy(dtype=np.float32)
        return lut

    def value_rgba_lut(self, column: str, cmap: str = "viridis", vmin: float | None = None,
                       vmax: float | None = None) -> tuple[np.ndarray, float, float]:
        """``(lut, vmin, vmax)``: RGBA lookup ``label_id -> cmap(value)`` for a confidence or
        distance map (background transparent); ``vmin``/``vmax`` default to the data range."""
        from matplotlib import colormaps

        values = self.value_lut(column)
        finite = np.isfinite(values)
        lo = float(np.nanmin(values[finite])) if vmin is None and finite.any() else float(vmin or 0.0)
        hi = float(np.nanmax(values[finite])) if vmax is None and finite.any() else float(vmax or 1.0)
        span = hi - lo if hi > lo else 1.0
        scaled = np.clip((values - lo) / span, 0.0, 1.0)
        lut = colormaps[cmap](np.where(finite, scaled, 0.0)).astype(np.float32)
        lut[~finite] = TRANSPARENT
        return lut, lo, hi

    # ------------------------------------------------------------------ events / state
    def connect(self, callback: Callable[[str], None]) -> Callable[[str], None]:
        """Call ``callback(kind)`` after every change; kinds: ``threshold``, ``edit``, ``undo``,
        ``redo``, ``visibility``, ``types``, ``colors``, ``labels``, ``niche``."""
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[[str], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def _emit(self, kind: str) -> None:
        for cb in list(getattr(self, "_callbacks", ())):
            cb(kind)

    def state(self) -> dict:
        """Everything besides the table needed to restore the session (JSON-serialisable)."""
        return {
            "min_confidence": self._min_confidence,
            "max_distance": self._max_distance,
            "categories": list(self._categories),
            "colors": self.hex_colors,
            "hidden": sorted(self._hidden),
            "history": self.history_records(),
            "redo": self.redo_records(),
            "max_history": self.max_history,
        }

    @classmethod
    def from_state(cls, table: pd.DataFrame, state: dict, label_ids=None) -> "Annotation":
        """Rebuild an annotation from a table written by :attr:`table` and :meth:`state`."""
        colors = {name: state.get("colors", {}).get(name) for name in state.get("categories", [])}
        colors = {k: v for k, v in colors.items() if v is not None}
        return cls(
            table,
            min_confidence=state.get("min_confidence", 0.0),
            max_distance=state.get("max_distance"),
            colors=colors,
            label_ids=label_ids,
            hidden=state.get("hidden"),
            history=state.get("history"),
            redo=state.get("redo"),
            max_history=state.get("max_history", DEFAULT_UNDO_DEPTH),
        )

    def __repr__(self) -> str:
        return (f"Annotation({self._n} cells, {len(self._categories) - 1} types, "
                f"{int((self._manual >= 0).sum())} manual, threshold "
                f"conf>={self._min_confidence:g}"
                + ("" if self._max_distance is None else f", dist<={self._max_distance:g}") + ")")


def _as_category(values: pd.Series) -> pd.Series:
    """Categorical with string categories (missing values stay missing)."""
    cat = pd.Categorical(values.to_numpy(dtype=object))
    names = [str(c) for c in cat.categories]
    if len(set(names)) == len(names):
        cat = cat.rename_categories(names)
    return pd.Series(cat, index=values.index, name=NICHE_CLUSTER)


def _clean_name(cell_type) -> str:
    name = str(cell_type).strip() if cell_type is not None else ""
    if not name:
        raise CellamaInputError("give the cell type a name")
    return name


def _check_table(table) -> None:
    if not isinstance(table, pd.DataFrame):
        raise CellamaInputError("the annotation needs the per-cell transfer table (a pandas DataFrame)")
    missing = [c for c in (TRANSFERRED_TYPE, CONFIDENCE, DISTANCE) if c not in table.columns]
    if missing:
        raise CellamaInputError(
            f"the transfer table lacks column(s) {', '.join(missing)}; use the table of run_transfer"
        )
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()][:3].tolist()
        raise CellamaInputError(f"the transfer table has duplicate cell ids (e.g. {dup})")
