"""Review state of a label transfer: threshold, manual edits, undo/redo, colours, filters.

:class:`Annotation` wraps the per-cell table of :func:`napari_cellama.core.run_transfer`
(index: cell id; ``transferred_type``, ``confidence``, ``distance`` ...) and keeps what a
biologist changes while reviewing it:

* an ``Unassigned`` threshold (minimum confidence and/or maximum distance) applied live
  with :func:`napari_cellama.core.transfer.apply_threshold` (no embedding is touched);
* manual labels (``source`` = ``manual``) that override the transferred label whatever the
  threshold, with undo / redo of the last :data:`DEFAULT_UNDO_DEPTH` edits;
* one stable colour per type, from a :class:`~napari_cellama.core.palette.TypeColors`
  (types get palette colours in the order they are first seen, so adding a type never
  changes the colour of another; ``Unassigned`` is grey);
* per-type visibility ("show only", hide, show all) for the Labels layer.

Every per-cell quantity is a numpy array aligned with the table rows; types reach a
napari Labels layer as a lookup table ``label_id -> type code + 1``
(:meth:`Annotation.label_code_lut`, one fancy-indexing pass) and a colormap with one entry
per type (:meth:`Annotation.type_color_dict`), so recolouring 100k cells costs milliseconds.
Nothing here imports Qt or napari.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from psygnal import Signal

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_UNDO_DEPTH,
    DISTANCE,
    LABEL_ID,
    LABEL_SOURCE,
    NEAREST_REFERENCE,
    NICHE_CLUSTER,
    REVIEWED,
    RUNNER_UP,
    SENTENCE,
    SOURCE,
    SOURCE_MANUAL,
    SOURCE_TRANSFERRED,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_COLOR,
    UNASSIGNED_REASON,
    UNKNOWN,
    UNKNOWN_SCORE,
)
from ..validators import CellamaInputError
from .annotation_display import TRANSPARENT, DisplayMixin  # noqa: F401 (TRANSPARENT: public name)
from .annotation_edits import EDIT_ASSIGN, EDIT_CLEAR, Edit, EditsMixin, clean_name  # noqa: F401
from .annotation_table import _as_category, _base_sources, _check_table, _manual_reasons
from .palette import TypeColors, palette_color, to_hex, to_rgba  # noqa: F401 (re-exported)
from .provenance import ProvenanceMixin
from .transfer import apply_threshold

# what each change announces: the named signal it emits (labels_changed carries the cause)
_SIGNAL_OF = {
    "threshold": "labels_changed",
    "edit": "labels_changed",
    "undo": "labels_changed",
    "redo": "labels_changed",
    "types": "types_changed",
    "colors": "colors_changed",
    "visibility": "visibility_changed",
    "labels": "label_ids_changed",
    "niche": "niche_changed",
}


class Annotation(EditsMixin, DisplayMixin, ProvenanceMixin):
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

    Signals (psygnal; connect a callback with ``annotation.labels_changed.connect(cb)``):

    * ``labels_changed(cause)``: the current label of cells changed; ``cause`` is
      ``"threshold"``, ``"edit"``, ``"undo"`` or ``"redo"``;
    * ``types_changed()``: a type name was added;
    * ``colors_changed()``: a type got another colour;
    * ``visibility_changed()``: types were shown or hidden;
    * ``label_ids_changed()``: the Labels-raster ids of the cells were set;
    * ``niche_changed()``: niche clusters were set or removed.
    palette
        The :class:`~napari_cellama.core.palette.TypeColors` new types take their colours
        from (a viewer's session passes its own, so that every layer shows a type in one
        colour); a fresh one by default.
    provenance
        Recorded steps (run steps and edits that left the undo stack) to restore; see
        :attr:`provenance` and :mod:`napari_cellama.core.provenance`.
    """

    labels_changed = Signal(str)
    types_changed = Signal()
    colors_changed = Signal()
    visibility_changed = Signal()
    label_ids_changed = Signal()
    niche_changed = Signal()

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
        palette: TypeColors | None = None,
        provenance: Sequence[dict] | None = None,
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
        self._palette = palette if palette is not None else TypeColors()
        self._explicit: set[str] = set()  # types whose colour was given, not handed out
        self._rgba: list[tuple] = [to_rgba(UNASSIGNED_COLOR)]
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
        self._reason = np.full(self._n, None, dtype=object)  # why each manual label was set
        self._reviewed = np.zeros(self._n, dtype=bool)
        self._base_source = _base_sources(base)
        if SOURCE in base and CELL_TYPE in base:
            is_manual = (base[SOURCE].astype(str) == SOURCE_MANUAL).to_numpy()
            if is_manual.any():
                names = base[CELL_TYPE].astype(str).to_numpy()[is_manual]
                for name in pd.unique(names):
                    self._register(str(name))
                self._manual[is_manual] = self._codes_of(names)
                self._reason[is_manual] = _manual_reasons(base, is_manual)
        if REVIEWED in base:
            self._reviewed[:] = base[REVIEWED].fillna(False).astype(bool).to_numpy()

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
        self._steps: list[dict] = [dict(s) for s in (provenance or ())]
        self._undo: list[Edit] = [self._edit_from_record(r) for r in (history or ())]
        self._redo: list[Edit] = [self._edit_from_record(r) for r in (redo or ())]
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
                self._palette.set(name, color)
                self._explicit.add(name)
            return self._code[name]
        if color is None:
            color = self._palette.color(name)
        else:
            self._palette.set(name, color)
            self._explicit.add(name)
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
        self._palette.set(cell_type, color)
        self._explicit.add(str(cell_type))
        self._emit("colors")

    def use_palette(self, palette: TypeColors) -> None:
        """Share ``palette`` (e.g. a viewer session's): colours given explicitly (saved or set)
        are written into it, every other type takes the palette's colour, and new types take
        theirs from it from now on."""
        for code, name in enumerate(self._categories):
            if name in self._explicit:
                palette.set(name, self._rgba[code])
            else:
                self._rgba[code] = palette.color(name)
        self._palette = palette
        self._emit("colors")

    def add_type(self, cell_type: str, color=None) -> None:
        """Register a new type name (gets the next palette colour unless ``color`` is given)."""
        name = clean_name(cell_type)
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
    def label_source(self) -> pd.Series:
        """What gave each cell its current label: ``manual:<reason>`` for a manual label, else
        the table's own ``label_source`` (e.g. ``prototypes`` in a combined table) or ``transfer``."""
        out = self._base_source.copy()
        manual = self._manual >= 0
        out[manual] = np.char.add("manual:", self._reason[manual].astype(str)).astype(object)
        return pd.Series(out, index=self._base.index, name=LABEL_SOURCE)

    @property
    def manual_mask(self) -> np.ndarray:
        return self._manual >= 0

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
        label ids are known, ``unknown_score`` and ``unassigned_reason`` when the transfer
        gave them, then any other column of the input table.
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
        for col in (UNKNOWN_SCORE, UNASSIGNED_REASON):  # why a cell is Unknown / Unassigned (issue 14)
            if col in self._base:
                out[col] = self._base[col].to_numpy()
        out[LABEL_SOURCE] = self.label_source.to_numpy()
        out[REVIEWED] = self._reviewed.copy()
        skip = set(out.columns) | {CELL_TYPE, SOURCE, NICHE_CLUSTER, LABEL_ID, LABEL_SOURCE, REVIEWED}
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

    # ------------------------------------------------------------------ events / state
    def _emit(self, kind: str) -> None:
        """Announce a change of ``kind`` on its named signal (see the class docstring)."""
        signal = getattr(self, _SIGNAL_OF[kind])
        if _SIGNAL_OF[kind] == "labels_changed":
            signal.emit(kind)
        else:
            signal.emit()

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
            "provenance": [dict(s) for s in self._steps],
        }

    @classmethod
    def from_state(cls, table: pd.DataFrame, state: dict, label_ids=None) -> Annotation:
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
            provenance=state.get("provenance"),
        )

    def __repr__(self) -> str:
        return (f"Annotation({self._n} cells, {len(self._categories) - 1} types, "
                f"{int((self._manual >= 0).sum())} manual, threshold "
                f"conf>={self._min_confidence:g}"
                + ("" if self._max_distance is None else f", dist<={self._max_distance:g}") + ")")
