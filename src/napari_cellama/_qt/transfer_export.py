"""Save-and-export part of the transfer dock: SpatialData session, h5ad, Xenium Explorer, CSV.

Every write goes through :mod:`napari_cellama.io.export`; "Open saved session" restores
layers, legend, threshold and manual edits (opening the session's Xenium run first when
it is not open).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from ..validators import CellamaInputError


class ExportMixin:
    """The "Save and export" box and its actions, mixed into the transfer dock (needs
    ``viewer``, ``session``, ``annotation``, ``result``, ``runner``, ``status``,
    ``show_annotation`` and ``_cells``)."""

    def _build_export_box(self) -> QGroupBox:
        box = QGroupBox("Save and export")
        ex = QHBoxLayout(box)
        self.save_button = QPushButton("Save session…")
        self.save_button.setToolTip("SpatialData zarr with every per-cell result, embeddings and edits")
        self.save_button.clicked.connect(lambda: self.save_session())
        self.h5ad_button = QPushButton("h5ad…")
        self.h5ad_button.clicked.connect(lambda: self.export_h5ad())
        self.explorer_button = QPushButton("Xenium Explorer CSV…")
        self.explorer_button.clicked.connect(lambda: self.export_explorer_csv())
        self.csv_button = QPushButton("CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        for w in (self.save_button, self.h5ad_button, self.explorer_button, self.csv_button):
            ex.addWidget(w)
        self.open_button = QPushButton("Open saved session…")
        self.open_button.clicked.connect(lambda: self.open_session())
        return box

    # ------------------------------------------------------------------ save / export
    def _sources(self) -> tuple:
        s = self.session
        return tuple(str(p) for p in (s.xenium_root, s.reference_path) if p)

    def _inputs(self) -> dict:
        s = self.session
        return {"query": str(s.xenium_root) if s.xenium_root else None,
                "reference": str(s.reference_path) if s.reference_path else None}

    def _ask_path(self, path, title: str, filter_: str, folder: bool = False):
        if path:
            return str(path)
        if folder:
            out, _ = QFileDialog.getSaveFileName(self, title, "annotation.zarr", filter_)
        else:
            out, _ = QFileDialog.getSaveFileName(self, title, "", filter_)
        return out or None

    def _export(self, writer, path, title, filter_, **kwargs):
        if self.annotation is None:
            self.runner.fail("run a transfer (or open a saved session) first")
            return None
        path = self._ask_path(path, title, filter_, folder=kwargs.pop("_folder", False))
        if not path:
            return None
        try:
            out = writer(path, self.annotation, sources=self._sources(), **kwargs)
        except CellamaInputError as err:
            self.runner.fail(str(err))
            return None
        from napari.utils.notifications import show_info

        show_info(f"napari-cellama: wrote {out}")
        return out

    def save_session(self, path=None, overwrite: bool = False):
        """Save everything as a SpatialData zarr (reopen with :meth:`open_session`)."""
        from ..io.export import write_spatialdata

        s = self.session
        if not path:  # the save dialog has asked whether to replace an existing session
            path = self._ask_path(None, "Save session (SpatialData zarr)", "zarr (*.zarr)", folder=True)
            if not path:
                return None
            overwrite = True
        return self._export(write_spatialdata, path, "Save session (SpatialData zarr)", "zarr (*.zarr)",
                            _folder=True, result=self.result, query=s.query, xenium=s.xenium_root,
                            inputs=self._inputs(), overwrite=overwrite)

    def export_h5ad(self, path=None):
        from ..io.export import write_h5ad

        return self._export(write_h5ad, path, "Export cells table (.h5ad)", "AnnData (*.h5ad)",
                            result=self.result, query=self.session.query, inputs=self._inputs())

    def export_explorer_csv(self, path=None):
        from ..io.export import write_explorer_csv

        return self._export(write_explorer_csv, path, "Export Xenium Explorer cell groups", "CSV (*.csv)")

    def export_csv(self, path=None):
        from ..io.export import write_cells_csv

        return self._export(write_cells_csv, path, "Export per-cell CSV", "CSV (*.csv)")

    def open_session(self, path=None):
        """Restore a saved session: layers, legend, threshold and manual edits."""
        from ..io.export import load_session

        if not path:
            path = QFileDialog.getExistingDirectory(self, "Open saved session (.zarr folder)")
            if not path:
                return None
        try:
            saved = load_session(path)
            self._ensure_run_open(saved)
        except CellamaInputError as err:
            self.runner.fail(str(err))
            return None
        self.show_annotation(saved.annotation, saved.transfer_result())
        self.status.setText(f"restored {len(saved.table):,} cells from {path}")
        return saved

    def _ensure_run_open(self, saved) -> None:
        try:
            self._cells()
            return
        except CellamaInputError:
            pass
        root = (saved.inputs or {}).get("query")
        if not root or not Path(root).exists():
            raise CellamaInputError(
                f"open the Xenium run of this session first (recorded at {root or 'an unknown path'})")
        self.viewer.open(root, plugin="napari-cellama")
        self.session.update(xenium_root=Path(root))
