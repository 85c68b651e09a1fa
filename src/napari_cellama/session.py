"""The shared state of one napari viewer: inputs, results, selection, colours (Qt-free).

One :class:`CellamaSession` per viewer is the single owner of everything the docks share.
Docks *write* a field and *subscribe* to its signal; no dock calls another, and no widget
method is stored here.

==========================  ============================================  ===========================
field                       what                                          signal (``session.events``)
==========================  ============================================  ===========================
``query`` ... ``layer_names``  the loaded run, reference, label column,   ``inputs()`` (:meth:`update`,
                            panel report, coverage, layer names           :meth:`clear`)
``transfer``                :class:`TransferState` (result + the          ``transfer(state)``
                            :class:`~napari_cellama.core.Annotation`)
``niche``                   :class:`NicheState` (result, clusters,        ``niche(state)``
                            colours)
``prototypes``              the last marker-prototype result              ``prototypes(result)``
``finetuned_model``         folder of the last fine-tuned model           ``finetuned_model(path)``
``fit_report``              reference-fit report of the shown transfer    ``fit_report(report)``
``previous_transfer``       the run replaced by the last re-run           ``previous_transfer(state)``
``running``                 the long steps running now (tuple of names,   ``running(names)``
                            e.g. ``("label transfer",)``; :meth:`job`)
``selection``               :class:`CellSelection`: the cells picked for  ``selection.changed(ids)``
                            review (one object, never replaced)
``type_colors``             :class:`~napari_cellama.core.palette.TypeColors`  ``type_colors.changed(name)``
==========================  ============================================  ===========================

Setting ``transfer``, ``niche``, ``prototypes`` or ``finetuned_model`` emits its signal with
the new value (``None`` when cleared)::

    from napari_cellama.session import get_session

    session = get_session(viewer)              # created empty on first use
    session.events.transfer.connect(on_transfer)
    session.selection.changed.connect(on_selection)
    if session.ready:                          # query, reference and label_key are set
        cells = viewer.layers[session.layer_names["cells"]]

Sessions live in a module-level ``weakref.WeakKeyDictionary`` keyed by the viewer object
(the viewer itself, not its id, so a closed and garbage-collected viewer takes its session
with it and a new viewer never inherits an old one). Nothing here imports Qt or napari.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psygnal import Signal, SignalGroup

from ._constants import CELL_ID, LABEL_ID
from .core.palette import TypeColors

__all__ = [
    "CellSelection",
    "CellamaSession",
    "NicheState",
    "TransferState",
    "clear_session",
    "get_session",
    "has_session",
]


@dataclass(frozen=True, eq=False)
class TransferState:
    """A shown label transfer: the engine's result (None for a session opened from disk
    without one) and the :class:`~napari_cellama.core.Annotation` being reviewed."""

    result: Any
    annotation: Any


@dataclass(frozen=True, eq=False)
class NicheState:
    """Shown niche clusters: the engine's result (None when restored from a saved session),
    the cluster of each clustered cell (Series by cell id) and ``{cluster: RGBA}``."""

    result: Any
    clusters: pd.Series
    colors: dict


class CellSelection:
    """The cells picked for review, by cell id; shared by every dock (Qt-free).

    ``changed`` is emitted with the new selection (a ``pd.Index`` of cell ids) whenever it
    changes. Any dock selects (a legend row, a niche, a plot point, a polygon) and the
    outline layer and the review controls follow.
    """

    changed = Signal(object)

    def __init__(self) -> None:
        self._ids = pd.Index([], dtype=object, name=CELL_ID)

    @property
    def ids(self) -> pd.Index:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def select(self, cell_ids, add: bool = False) -> pd.Index:
        """Select ``cell_ids`` (``add`` keeps the current selection); returns the selection."""
        ids = pd.Index(np.asarray(list(cell_ids), dtype=object).astype(str), name=CELL_ID).unique()
        new = self._ids.union(ids) if add else ids
        if not new.equals(self._ids):
            self._ids = pd.Index(new, name=CELL_ID)
            self.changed.emit(self._ids)
        return self._ids

    def clear(self) -> None:
        self.select([])


class SessionEvents(SignalGroup):
    """The signals of a :class:`CellamaSession` (see the module docstring)."""

    inputs = Signal()
    transfer = Signal(object)
    niche = Signal(object)
    prototypes = Signal(object)
    finetuned_model = Signal(object)
    fit_report = Signal(object)
    previous_transfer = Signal(object)
    running = Signal(object)


_EVENTED = ("transfer", "niche", "prototypes", "finetuned_model", "fit_report", "previous_transfer",
            "running")
_INPUTS = ("query", "reference", "label_key", "panel", "coverage", "top_k", "xenium_root",
           "reference_path", "layer_names")


@dataclass(eq=False)
class CellamaSession:
    """The shared state of one viewer (see the module docstring)."""

    # ---- inputs (set together with update(); signal: events.inputs)
    query: Any = None
    """AnnData: Xenium cells x genes; ``obs_names`` = ``cell_id``, ``obs['label']`` = label
    value in the cells layer, ``obsm['spatial']`` = centroids in microns."""
    reference: Any = None
    """AnnData: the labelled reference, as :func:`napari_cellama.io.read_reference` gives it."""
    label_key: str | None = None
    """Column of ``reference.obs`` holding the cell types."""
    panel: Any = None
    """:class:`napari_cellama.core.PanelReport` of query vs reference."""
    coverage: Any = None
    """DataFrame of :func:`napari_cellama.core.coverage.marker_coverage`."""
    top_k: int | None = None
    """top-k the panel report was computed with."""
    xenium_root: Path | None = None
    reference_path: Path | None = None
    layer_names: dict = field(default_factory=dict)
    """Names of the run's layers: keys ``"cells"``, ``"centroids"``, ``"image"`` (first channel)."""

    # ---- results (each set emits its own signal)
    transfer: TransferState | None = None
    niche: NicheState | None = None
    prototypes: Any = None
    """:class:`napari_cellama.core.PrototypeResult` of the last marker-prototype run."""
    finetuned_model: str | None = None
    """Folder of the last model fine-tuned in this viewer."""
    fit_report: Any = None
    """:class:`napari_cellama.core.FitReport` of the shown transfer (None until computed)."""
    previous_transfer: TransferState | None = None
    """The run shown before the last re-run (kept to compare run A with run B)."""
    running: tuple = ()
    """Names of the long steps that use the session's inputs and are running now (a transfer,
    niche clustering): the load dock refuses to replace the inputs while this is not empty."""

    # ---- shared models (never replaced)
    selection: CellSelection = field(default_factory=CellSelection)
    type_colors: TypeColors = field(default_factory=TypeColors)
    """The colour of every cell type shown in this viewer (transfer, prototypes, plots)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", SessionEvents())

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in _EVENTED and "events" in self.__dict__:
            getattr(self.events, name).emit(value)

    @property
    def ready(self) -> bool:
        """True once query, reference and label column are all set."""
        return self.query is not None and self.reference is not None and bool(self.label_key)

    @property
    def annotation(self):
        """The :class:`~napari_cellama.core.Annotation` of the shown transfer (None if none)."""
        return None if self.transfer is None else self.transfer.annotation

    @property
    def label_of_cell(self) -> pd.Series:
        """pandas Series: label value (cells layer) of each ``cell_id`` of the query."""
        if self.query is None or LABEL_ID not in self.query.obs:
            return pd.Series(dtype="int64")
        obs = self.query.obs
        return pd.Series(
            obs[LABEL_ID].to_numpy(), index=pd.Index(obs.index.astype(str), name=CELL_ID)
        )

    def job_started(self, name: str) -> None:
        """Record that a step using the session's inputs is running (emits ``running``)."""
        self.running = (*self.running, str(name))

    def job_finished(self, name: str) -> None:
        """Record that the step ``name`` ended (finished, failed or cancelled)."""
        names = list(self.running)
        if str(name) in names:
            names.remove(str(name))
            self.running = tuple(names)

    def update(self, **inputs) -> None:
        """Set several inputs at once (``query``, ``reference``, ...), then emit ``events.inputs``."""
        for key, value in inputs.items():
            if key not in _INPUTS:
                raise AttributeError(f"CellamaSession has no input {key!r} (inputs: {', '.join(_INPUTS)})")
            setattr(self, key, value)
        self.events.inputs.emit()

    def clear(self) -> None:
        """Forget everything: inputs (``events.inputs``), results (each its signal), the selection."""
        defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
                    for f in fields(self) if f.name in _INPUTS}
        for key, value in defaults.items():
            setattr(self, key, value)
        for key in _EVENTED:
            if key != "running":  # steps still running keep running: they end by themselves
                setattr(self, key, None)
        self.selection.clear()
        self.events.inputs.emit()


_SESSIONS: weakref.WeakKeyDictionary[Any, CellamaSession] = weakref.WeakKeyDictionary()


def get_session(viewer, create: bool = True) -> CellamaSession | None:
    """The session of ``viewer`` (created empty when missing and ``create``)."""
    session = _SESSIONS.get(viewer)
    if session is None and create:
        session = CellamaSession()
        _SESSIONS[viewer] = session
    return session


def has_session(viewer) -> bool:
    """True when ``viewer`` already has a session."""
    return viewer in _SESSIONS


def clear_session(viewer) -> None:
    """Drop the session of ``viewer`` (after clearing it, so listeners hear about it)."""
    session = _SESSIONS.pop(viewer, None)
    if session is not None:
        session.clear()
