"""Dock widget "4. Review": defend every label.

* **Evidence** (:mod:`.evidence_panel`) of the clicked or selected cell: sentence, counts,
  label / confidence / runner-up / Unknown score, the vote of its nearest reference cells
  and the marker check; accept, reassign, Unknown; show its neighbours on the UMAP.
* **Review queue** (:mod:`.review_queue_view`): the most uncertain cells first, walked with
  keys (``.`` / ``,``), the camera centred on each; one key accepts, reassigns or calls it
  Unknown (undoable edits that mark the cell reviewed); filters by label, region
  (the selection) and confidence; reviewed / remaining counts.
* **Clusters** (:mod:`.cluster_naming`): the reference-fit warning ("types possibly missing
  from the reference") shown as a banner after a run, the clusters with size and top
  markers, show on tissue, name a whole cluster in one step - also the Xenium graph
  clusters and the niche clusters.
* **Dotplot** (:mod:`.dotplot_view`): the reference's markers over the query cells by label.

Everything the panels show is computed once per transfer off the GUI thread
(:func:`.review_jobs.prepare_review`, through the dock's JobRunner), which also sets the
session's ``fit_report``.
"""

from __future__ import annotations

import weakref

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QScrollArea, QSizePolicy, QTabWidget, QVBoxLayout, QWidget

from .._constants import UNKNOWN
from ._dock import SessionDock
from ._runner import JobRunner
from ._wiring import rewire
from .cluster_naming import FIT_CLUSTERS, ClusterNamingMixin, ClusterPanel, fit_warning_text
from .dotplot_view import DotplotMixin, DotplotView
from .evidence_panel import EvidencePanel
from .review_queue_view import QUEUE_KEYS, QueuePanel
from .review_walk import CURSOR_LAYER, QueueWalkMixin
from .selection_view import SelectionView, cells_layer

REVIEW_REASON = "review"
__all__ = ["CURSOR_LAYER", "REVIEW_REASON", "ReviewWidget"]


class ReviewWidget(QueueWalkMixin, ClusterNamingMixin, DotplotMixin, SessionDock):
    """Evidence, review queue, reference-fit warning + cluster naming, dotplot (module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.annotation = None
        self.result = None
        self.data = None
        self.queue = None
        self._dotplot_dirty = True
        self._advancing = False
        self._shown_group = None
        self.selection_view = SelectionView(napari_viewer, self.session)
        self.runner = JobRunner(self)
        self.runner.cancelled.connect(self._on_runner_cancelled)
        self.status = QLabel("Run a transfer (dock 2) to review its labels.")
        self.status.setWordWrap(True)

        self.clusters = ClusterPanel()
        self.banner = self.clusters.banner  # shown above the tabs, whatever tab is open
        self.evidence = EvidencePanel()
        self.queue_panel = QueuePanel()
        self.dotplot = DotplotView()

        review_page = QWidget()
        rl = QVBoxLayout(review_page)
        rl.addWidget(self.queue_panel)
        rl.addWidget(self.evidence)
        rl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # wrap to the dock's width
        scroll.setWidget(review_page)
        self.tabs = QTabWidget()
        self.tabs.addTab(scroll, "Evidence && queue")
        self.tabs.addTab(self.clusters, "Clusters")
        self.tabs.addTab(self.dotplot, "Dotplot")
        self.tabs.currentChanged.connect(lambda _i: self._refresh_visible_tab())
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.status)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.tabs, 1)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)

        self.evidence.accept_requested.connect(lambda cell: self.accept(cell, advance=False))
        self.evidence.reassign_requested.connect(lambda cell, t: self.reassign(t, cell, advance=False))
        self.evidence.neighbours_requested.connect(self.show_neighbours)
        self.queue_panel.filters_changed.connect(self.apply_filters)
        self.queue_panel.action.connect(self.queue_action)
        self.clusters.source_changed.connect(lambda _s: self.show_clustering())
        self.clusters.show_requested.connect(lambda src, c: self.show_cluster(c, src))
        self.clusters.name_requested.connect(lambda src, c, name: self.name_cluster(c, name, src))
        self.dotplot.group_clicked.connect(self.select_label)
        self.dotplot.gene_clicked.connect(self.show_gene)

        self.session.events.transfer.connect(self._on_transfer)
        self.session.events.fit_report.connect(self._on_fit_report)
        self.session.events.niche.connect(self._on_niche)
        self.session.selection.changed.connect(self._on_selection)
        self._bind_keys()
        self.viewer.mouse_drag_callbacks.append(_weak_click(self))
        if self.session.transfer is not None:
            self._on_transfer(self.session.transfer)

    # ------------------------------------------------------------------ transfer / job
    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _on_transfer(self, state) -> None:
        annotation = None if state is None else state.annotation
        rewire(self.annotation, annotation, {"labels_changed": self._on_labels_changed,
                                             "types_changed": self._on_types_changed})
        self.annotation = annotation
        self.result = None if state is None else state.result
        self.data = None
        self.queue = None
        self._dotplot_dirty = True
        self.evidence.show_message("Click a cell (or press . for the review queue) to see why it got its label.")
        self.clusters.set_warning("")
        if annotation is None:
            self.status.setText("Run a transfer (dock 2) to review its labels.")
            return
        self._on_types_changed()
        self._fill_sources()
        self.status.setText("preparing markers, evidence and the reference fit report …")
        self.prepare()  # first: it cancels the older transfer's jobs, not the new queue's grouping
        self.apply_filters()

    def prepare(self, sync: bool = False):
        """Compute markers, evidence index and fit report of the shown transfer (off-thread)."""
        from .review_jobs import prepare_review

        s = self.session
        inputs = {"query": s.query, "reference": s.reference, "label_key": s.label_key, "xenium_root": s.xenium_root}
        state = s.transfer
        done = lambda data: self._on_prepared(data, state)  # noqa: E731
        if sync:
            return self.runner.run_sync(prepare_review, self.result, self.annotation, inputs, on_done=done)
        chained = self.runner.busy
        if chained:
            self.runner.cancel()
        return self.runner.start(prepare_review, self.result, self.annotation, inputs, on_done=done,
                                 what="review: markers and fit report", chained=chained)

    def _on_prepared(self, data, state) -> None:
        if state is not self.session.transfer:  # a newer transfer replaced it meanwhile
            return
        self.data = data
        n_types = data.markers["cell_type"].nunique() if len(data.markers) else 0
        self.status.setText(f"markers of {n_types} reference types; "
                            + ("evidence ready: click a cell." if data.index is not None
                               else "no embeddings in this session: evidence needs a transfer run."))
        self._dotplot_dirty = True
        self._fill_sources()
        self.session.fit_report = data.fit_report  # -> _on_fit_report
        self._refresh_visible_tab()
        if self.evidence.evidence is not None or len(self.session.selection) == 1:
            self._on_selection(self.session.selection.ids)

    def _on_niche(self, _state) -> None:
        if self.annotation is not None:
            self._fill_sources()  # niche clusters become a clustering to name

    def _on_fit_report(self, report) -> None:
        self.clusters.set_warning(fit_warning_text(report))
        if report is not None and FIT_CLUSTERS in getattr(self, "_sources", {}):
            self.clusters.source_combo.setCurrentText(FIT_CLUSTERS)  # -> show_clustering
        if report is not None and len(report.possibly_missing):
            self.tabs.setCurrentWidget(self.clusters)
        self.show_clustering()

    # ------------------------------------------------------------------ annotation signals
    def _on_labels_changed(self, _cause=None) -> None:
        self._dotplot_dirty = True
        self._update_counts()
        if self.evidence.evidence is not None and not self._advancing:  # moving on: next cell shown instead
            self.show_cell(self.evidence.evidence.cell_id, select=False)
        self._refresh_visible_tab()

    def _on_types_changed(self) -> None:
        if self.annotation is None:
            return
        types = [t for t in self.annotation.categories]
        if UNKNOWN not in types:
            types.append(UNKNOWN)
        self.evidence.set_types(types)
        self.queue_panel.set_labels(self.annotation.categories)

    def _refresh_visible_tab(self) -> None:
        if self.tabs.currentWidget() is self.dotplot and self._dotplot_dirty:
            self.draw_dotplot()

    # ------------------------------------------------------------------ evidence
    def _on_selection(self, ids) -> None:
        if len(ids) == 1:
            self.show_cell(str(ids[0]), select=False)

    def show_cell(self, cell_id: str, select: bool = True):
        """Show the evidence of ``cell_id`` (``select``: also make it the session's selection)."""
        if select:
            self.session.selection.select([cell_id])  # -> _on_selection shows it
            ev = self.evidence.evidence
            if ev is not None and ev.cell_id == str(cell_id):
                return ev
        if self.data is None or self.data.index is None or self.annotation is None:
            self.evidence.show_message(f"{cell_id}: evidence not ready yet" if self.data is None else
                                       f"{cell_id}: no embeddings in this session (re-run the transfer)")
            return None
        ev = self.data.index.cell(cell_id, self.annotation)
        self.evidence.show_evidence(ev, self.annotation.color_of)
        return ev

    def cell_at(self, position) -> str | None:
        """cell_id under a world position, or None."""
        cells = cells_layer(self.viewer, self.session)
        if cells is None or self.annotation is None or self.annotation.label_ids is None:
            return None
        value = cells.get_value(position, world=True)
        if isinstance(value, tuple):
            value = value[-1]
        if value is None or int(value) == 0:
            return None
        ids = self.annotation.cell_ids_of_labels([int(value)])
        return str(ids[0]) if len(ids) else None

    def show_neighbours(self, cell_id: str) -> None:
        """Ask the plots dock to highlight the cell's nearest reference cells on the UMAP."""
        from ..review_focus import reference_focus

        ev = self.evidence.evidence
        if ev is None or ev.cell_id != cell_id:
            ev = self.show_cell(cell_id, select=False)
        if ev is not None:
            reference_focus(self.session).show(ev.reference_rows, f"nearest reference cells of {cell_id}")
            self.status.setText(f"{len(ev.reference_rows)} nearest reference cells of {cell_id} highlighted in "
                                "the Plots dock's UMAP (compute it there if it is not shown)")

    # ------------------------------------------------------------------ edits
    def _target(self, cell_id: str | None) -> str | None:
        if cell_id is not None:
            return str(cell_id)
        if self.evidence.evidence is not None:
            return self.evidence.evidence.cell_id
        return self.queue.current if self.queue is not None else None

    def accept(self, cell_id: str | None = None, advance: bool = True):
        """Keep the cell's label and mark it reviewed (undoable); ``advance``: next in queue."""
        cell = self._target(cell_id)
        if self.annotation is None or cell is None:
            return None
        self._advancing = advance
        try:
            edit = self.annotation.mark_reviewed([cell], reason=REVIEW_REASON)
        finally:
            self._advancing = False
        if advance:
            self.next_cell()
        return edit

    def reassign(self, cell_type: str, cell_id: str | None = None, advance: bool = True):
        """Label the cell ``cell_type`` (any type, a new name or Unknown), reviewed, undoable."""
        cell = self._target(cell_id)
        if self.annotation is None or cell is None or not str(cell_type).strip():
            return None
        self._advancing = advance
        try:
            edit = self.annotation.assign([cell], str(cell_type), reason=REVIEW_REASON, review=True)
        finally:
            self._advancing = False
        if advance:
            self.next_cell()
        return edit

    def undo(self):
        return self.annotation.undo() if self.annotation is not None else None

    def queue_action(self, name: str):
        """One of :data:`QUEUE_KEYS`' actions (buttons and keys)."""
        if name == "next":
            return self.next_cell()
        if name == "previous":
            return self.previous_cell()
        if name == "accept":
            return self.accept()
        if name == "reassign":
            return self.reassign(self.evidence.type_combo.currentText())
        if name == "unknown":
            return self.reassign(UNKNOWN)
        if name == "undo":
            return self.undo()
        return None

    def _bind_keys(self) -> None:
        """Bind :data:`QUEUE_KEYS` in the viewer (while the dock is open; see :meth:`event`)."""
        ref = weakref.ref(self)
        self._key_actions = {}
        for name, key in QUEUE_KEYS.items():
            def action(_viewer, name=name):
                widget = ref()
                if widget is not None:
                    widget.queue_action(name)
            action.__doc__ = f"napari-cellama review queue: {name}"
            self.viewer.bind_key(key, action, overwrite=True)
            self._key_actions[key] = action

    def _unbind_keys(self) -> None:
        """Give the queue's keys back to napari (only those still bound to this dock)."""
        from napari.utils.key_bindings import coerce_keybinding

        keymap = self.viewer.keymap
        for key, action in getattr(self, "_key_actions", {}).items():
            if keymap.get(coerce_keybinding(key)) is action:
                self.viewer.bind_key(key, None)
        self._key_actions = {}

    @property
    def keys_bound(self) -> bool:
        """True while the queue's keys are bound in the viewer to this dock."""
        from napari.utils.key_bindings import coerce_keybinding

        actions = getattr(self, "_key_actions", {})
        return bool(actions) and all(self.viewer.keymap.get(coerce_keybinding(k)) is a for k, a in actions.items())

    def event(self, event) -> bool:
        """Keys follow the dock: unbound when napari closes it, bound again when it is docked again."""
        from qtpy.QtCore import QEvent

        handled = super().event(event)
        if event.type() == QEvent.ParentChange:
            if self.parentWidget() is None:
                self._unbind_keys()
            elif not self.keys_bound:
                self._bind_keys()
        return handled


def _weak_click(widget):
    """A mouse callback showing the evidence of a clicked cell (plain click, no drag)."""
    ref = weakref.ref(widget)

    def on_click(viewer, event):
        start = tuple(event.position)
        yield
        while event.type == "mouse_move":
            yield
        w = ref()
        if w is None or w.annotation is None:
            return
        if np.hypot(*np.subtract(event.position[-2:], start[-2:])) > 2 * min(viewer.layers[0].scale[-2:]):
            return  # a pan, not a click
        cell = w.cell_at(start)
        if cell is not None:
            w.show_cell(cell, select=False)

    return on_click
