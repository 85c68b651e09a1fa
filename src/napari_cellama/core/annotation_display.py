"""How an :class:`~napari_cellama.core.Annotation` is shown: the cells' Labels-raster ids,
per-type visibility, the type lookups a napari Labels layer draws with (``label_id -> type code + 1`` and one colour per
type, hidden types transparent) and the types' names (:meth:`DisplayMixin.rename_type`). Qt-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import RUNNER_UP, TRANSFERRED_TYPE, UNASSIGNED, UNKNOWN
from ..validators import CellamaInputError

TRANSPARENT = np.zeros(4, dtype=np.float32)


class DisplayMixin:
    """Label ids, visibility and colour lookups (mixed into :class:`~napari_cellama.core.Annotation`)."""

    # ------------------------------------------------------------------ Labels-raster ids
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

    def _require_labels(self) -> np.ndarray:
        if self._labels is None:
            raise CellamaInputError("label ids are not set; call set_label_ids with the Labels ids of the cells")
        return self._labels

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

    # ------------------------------------------------------------------ names
    def rename_type(self, old: str, new: str) -> str:
        """Call type ``old`` ``new`` everywhere: its cells (transferred and manual labels), the
        table's ``transferred_type`` / ``runner_up``, the colour (``new`` keeps ``old``'s), the
        visibility, the edit history and every export. Renaming to a type that already exists
        merges ``old`` into it (its cells take ``new``'s colour). ``Unassigned`` and ``Unknown``
        are the method's calls, not names: assign their cells instead. Returns ``new``.

        Emits ``types_changed`` and ``labels_changed("rename")``; the shared palette (a
        viewer session's) announces ``renamed(old, new)`` so other layers follow.
        """
        from .annotation_edits import clean_name

        old, new = str(old), clean_name(new)
        if old not in self._code:
            raise CellamaInputError(f"unknown cell type {old!r}")
        if old in (UNASSIGNED, UNKNOWN):
            raise CellamaInputError(f"{old} is the method's call, not a type name; select its cells and assign a "
                                    "type instead")
        if new in (UNASSIGNED, UNKNOWN):
            raise CellamaInputError(f"{new!r} is reserved; choose another name")
        if new == old:
            return new
        for col in (TRANSFERRED_TYPE, RUNNER_UP):
            if col in self._base:
                values = self._base[col].astype(object)
                self._base[col] = values.where(values != old, new)
        code = self._code[old]
        if new in self._code:  # merge: old's cells take new's code; old stays, empty
            target = self._code[new]
            for arr in (self._tcodes, self._thr_codes, self._manual):
                arr[arr == code] = target
            for edit in list(self._undo) + list(self._redo):
                edit.before[edit.before == code] = target
                if edit.after == code:
                    edit.after = target
            self._update_codes()
        else:
            self._categories[code] = new
            del self._code[old]
            self._code[new] = code
            if old in self._hidden:
                self._hidden.discard(old)
                self._hidden.add(new)
            if old in self._explicit:
                self._explicit.discard(old)
                self._explicit.add(new)
        self._palette.rename(old, new)
        self.types_changed.emit()
        self.labels_changed.emit("rename")
        return new
