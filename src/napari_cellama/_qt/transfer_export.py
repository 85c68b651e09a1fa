"""Save-and-export part of the transfer dock: SpatialData session, h5ad, Xenium Explorer, CSV, script.

Every write goes through :mod:`napari_cellama.io.export`; "Open saved session" restores
layers, legend, threshold and manual edits (opening the session's Xenium run first when
it is not open). The buttons save off the GUI thread through the dock's
:class:`~._runner.JobRunner` (progress bar, the GUI stays responsive): the writer gets a
snapshot of the annotation (:meth:`Annotation.snapshot_parts`), so edits made meanwhile are not
half-saved, and every file is written to a temporary sibling and renamed into place.
Exports record the inputs of the run that made the labels (the annotation's provenance),
not whatever is loaded now. "Export as script" writes the steps that re-make the labels as
a Python script (:func:`napari_cellama.io.replay.write_replay_script`).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QGridLayout, QGroupBox, QPushButton

from ..validators import CellamaInputError


def write_job(writer, path, snapshot, **kwargs):
    """Worker job of a background save: the annotation rebuilt from its ``snapshot``
    (:meth:`Annotation.snapshot_parts`, taken on the GUI thread), then ``writer(path, annotation,
    **kwargs)`` (atomic)."""
    from ..core.provenance import from_snapshot

    out = writer(path, from_snapshot(snapshot), **kwargs)
    yield ("saved", 1, 1)
    return out


class ExportMixin:
    """The "Save and export" box and its actions, mixed into the transfer dock (needs
    ``viewer``, ``session``, ``annotation``, ``result``, ``runner``, ``status``,
    ``show_annotation`` and ``_cells``)."""

    def _build_export_box(self) -> QGroupBox:
        box = QGroupBox("Save and export")
        ex = QGridLayout(box)  # two rows: five buttons in one would widen the dock past a laptop screen
        self.save_button = QPushButton("Save session…")
        self.save_button.setToolTip("SpatialData zarr with every per-cell result, embeddings and edits")
        self.save_button.clicked.connect(lambda: self.save_session(background=True))
        self.h5ad_button = QPushButton("h5ad…")
        self.h5ad_button.clicked.connect(lambda: self.export_h5ad(background=True))
        self.explorer_button = QPushButton("Xenium Explorer CSV…")
        self.explorer_button.clicked.connect(lambda: self.export_explorer_csv(background=True))
        self.csv_button = QPushButton("CSV…")
        self.csv_button.clicked.connect(lambda: self.export_csv(background=True))
        self.script_button = QPushButton("Script…")
        self.script_button.setToolTip("Export as script: a Python script (public API) that re-runs the transfer "
                                      "from the recorded inputs and applies the manual edits in order")
        self.script_button.clicked.connect(lambda: self.export_script())
        for i, w in enumerate((self.save_button, self.h5ad_button, self.csv_button, self.explorer_button,
                               self.script_button)):
            ex.addWidget(w, i // 3, i % 3)
        self.open_button = QPushButton("Open saved session…")
        self.open_button.clicked.connect(lambda: self.open_session())
        return box

    # ------------------------------------------------------------------ save / export
    def _sources(self) -> tuple:
        s = self.session
        return tuple(str(p) for p in (s.xenium_root, s.reference_path) if p)

    def _inputs(self) -> dict:
        """The inputs of the run that made the shown labels (its provenance), else the loaded ones."""
        from ..core.provenance import recorded_inputs

        s = self.session
        loaded = {"query": str(s.xenium_root) if s.xenium_root else None,
                  "reference": str(s.reference_path) if s.reference_path else None}
        made = recorded_inputs(self.annotation.provenance) if self.annotation is not None else {}
        return {**loaded, **{k: v for k, v in made.items() if k in loaded}}

    def _run_record(self, label_key=None) -> dict:
        """The inputs of a run about to start (kept with its result as provenance); their content
        fingerprints are computed now in a thread, so that recording them later is instant."""
        import threading

        from ..core.provenance import content_fingerprint

        if self.runner.busy and getattr(self, "_run_inputs", None) is not None:
            return self._run_inputs  # a run is going (this start will be refused): its inputs stay
        s = self.session
        paths = [p for p in (s.xenium_root, s.reference_path) if p]
        threading.Thread(target=lambda: [content_fingerprint(p) for p in paths], daemon=True).start()
        return {"query": s.xenium_root, "reference": s.reference_path, "label_key": label_key or s.label_key}

    def _ask_path(self, path, title: str, filter_: str, folder: bool = False):
        if path:
            return str(path)
        if folder:
            out, _ = QFileDialog.getSaveFileName(self, title, "annotation.zarr", filter_)
        else:
            out, _ = QFileDialog.getSaveFileName(self, title, "", filter_)
        return out or None

    def _export(self, writer, path, title, filter_, background: bool = False, **kwargs):
        if self.annotation is None:
            self.runner.fail("run a transfer (or open a saved session) first")
            return None
        path = self._ask_path(path, title, filter_, folder=kwargs.pop("_folder", False))
        if not path:
            return None
        if background:  # off the GUI thread, on a snapshot (issue 17 item 4)
            return self.runner.start(write_job, writer, path, self.annotation.snapshot_parts(), on_done=self._on_saved,
                                     what=f"saving {Path(path).name}", sources=self._sources(), **kwargs)
        try:
            out = writer(path, self.annotation, sources=self._sources(), **kwargs)
        except CellamaInputError as err:
            self.runner.fail(str(err))
            return None
        self._on_saved(out)
        return out

    def _on_saved(self, out) -> None:
        from napari.utils.notifications import show_info

        self.last_saved = out
        self.status.setText(f"saved {out}")
        show_info(f"napari-cellama: wrote {out}")

    def save_session(self, path=None, overwrite: bool = False, background: bool = False):
        """Save everything as a SpatialData zarr (reopen with :meth:`open_session`).

        ``background=True`` (the button) writes in a worker and returns it at once; the zarr
        appears (renamed into place whole) when the worker finishes."""
        from ..io.export import write_spatialdata

        s = self.session
        if not path:  # the save dialog has asked whether to replace an existing session
            path = self._ask_path(None, "Save session (SpatialData zarr)", "zarr (*.zarr)", folder=True)
            if not path:
                return None
            overwrite = True
        return self._export(write_spatialdata, path, "Save session (SpatialData zarr)", "zarr (*.zarr)",
                            _folder=True, result=self.result, query=s.query, xenium=s.xenium_root,
                            inputs=self._inputs(), overwrite=overwrite, background=background)

    def export_h5ad(self, path=None, background: bool = False):
        from ..io.export import write_h5ad

        return self._export(write_h5ad, path, "Export cells table (.h5ad)", "AnnData (*.h5ad)",
                            result=self.result, query=self.session.query, inputs=self._inputs(),
                            background=background)

    def export_explorer_csv(self, path=None, background: bool = False):
        from ..io.export import write_explorer_csv

        return self._export(write_explorer_csv, path, "Export Xenium Explorer cell groups", "CSV (*.csv)",
                            background=background)

    def export_csv(self, path=None, background: bool = False):
        from ..io.export import write_cells_csv

        return self._export(write_cells_csv, path, "Export per-cell CSV", "CSV (*.csv)", background=background)

    def export_script(self, path=None):
        """Export as script: the steps that re-make the labels (transfer + manual edits, in order)."""
        from ..io.replay import write_replay_script

        def write(p, annotation, sources=()):
            return write_replay_script(p, annotation, str(Path(p).with_suffix(".csv").name))

        return self._export(write, path, "Export as script (re-make the labels)", "Python (*.py)")

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
