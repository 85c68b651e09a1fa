"""What the load widget loaded, for the widgets that come after it (Qt-free).

One :class:`CellamaSession` per napari viewer holds the query (Xenium cells x genes), the
reference, the chosen label column, the panel report, the marker coverage and the names
of the layers that show the run. The load widget fills it; the transfer, review and niche
widgets read it (and may store their own results in ``session.results``).

How to reach it::

    from napari_cellama.session import get_session

    session = get_session(viewer)          # created empty on first use
    if session.ready:                      # query, reference and label_key are set
        query, reference = session.query, session.reference
        cells = viewer.layers[session.layer_names["cells"]]
    session.changed.connect(callback)      # called with the name of what changed

Sessions live in a module-level ``weakref.WeakKeyDictionary`` keyed by the viewer object
(the viewer itself, not its id, so a closed and garbage-collected viewer takes its session
with it and a new viewer never inherits an old one). Nothing here imports Qt or napari:
``changed`` is a psygnal signal, which napari already depends on.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from psygnal import Signal

from ._constants import CELL_ID, LABEL_ID
from .core.palette import TypeColors

__all__ = ["CellamaSession", "clear_session", "get_session", "has_session"]


@dataclass(eq=False)
class CellamaSession:
    """The loaded run, reference and checks of one viewer (see the module docstring)."""

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
    type_colors: TypeColors = field(default_factory=TypeColors)
    """The colour of every cell type shown in this viewer (transfer, prototypes, plots)."""
    results: dict = field(default_factory=dict)
    """Free space for later widgets (e.g. ``results["transfer"]``)."""

    changed: ClassVar[Signal] = Signal(str)
    """Emitted with a word saying what changed (``"loaded"``, ``"cleared"``, or a widget's own)."""

    @property
    def ready(self) -> bool:
        """True once query, reference and label column are all set."""
        return self.query is not None and self.reference is not None and bool(self.label_key)

    @property
    def label_of_cell(self):
        """pandas Series: label value (cells layer) of each ``cell_id`` of the query."""
        import pandas as pd

        if self.query is None or LABEL_ID not in self.query.obs:
            return pd.Series(dtype="int64")
        obs = self.query.obs
        return pd.Series(
            obs[LABEL_ID].to_numpy(), index=pd.Index(obs.index.astype(str), name=CELL_ID)
        )

    def update(self, what: str = "loaded", **values) -> None:
        """Set several fields at once, then emit ``changed(what)``."""
        names = {f.name for f in fields(self)}
        for key, value in values.items():
            if key not in names:
                raise AttributeError(f"CellamaSession has no field {key!r}")
            setattr(self, key, value)
        self.changed.emit(what)

    def clear(self) -> None:
        """Forget everything (emits ``changed("cleared")``)."""
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if callable(f.default_factory) else f.default)
        self.changed.emit("cleared")


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
