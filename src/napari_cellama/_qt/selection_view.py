"""The ``selected cells`` outline layer, driven by the session's :class:`CellSelection`.

Every dock that lets the user pick cells holds a :class:`SelectionView`: it subscribes to
``session.selection.changed``, so any selection (transfer review, a niche, a plot point) is
outlined on the tissue whatever dock made it and whichever docks are open (each open dock's
view writes the same outlines; the view lives and dies with its dock). The layer is made by
:func:`napari_cellama.layers.selection_layer` on the first selection and re-made if the user
deletes it. It is hidden while the selection is empty (nothing to outline, and a visible
layer re-reads and re-outlines the cells under the view on every pan).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import CELL_ID

SELECTION_LAYER = "selected cells"


class SelectionView:
    """Keeps the outline layer of one viewer in step with its session's selection."""

    def __init__(self, viewer, session) -> None:
        self.viewer = viewer
        self.session = session
        session.selection.changed.connect(self._on_changed)

    def layer(self, create: bool = True):
        """The outline layer (made over the run's cells layer when missing and ``create``)."""
        from .. import layers as L

        viewer = self.viewer
        if viewer is None:
            return None
        for layer in viewer.layers:
            if L.layer_kind(layer) == "selection":
                return layer
        if not create:
            return None
        cells = cells_layer(viewer, self.session)
        if cells is None:
            return None
        layer = L.selection_layer(cells, name=SELECTION_LAYER)
        layer.visible = len(self.session.selection) > 0  # nothing to outline yet: no re-slicing on pans
        layer = viewer.add_layer(layer)
        # outlines over the maps, under the cells layer (which stays on top for hovering)
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(cells))
        viewer.layers.selection.active = cells
        return layer

    def raise_above_maps(self) -> None:
        """Put the outlines back just under the cells layer (after a dock added map layers)."""
        viewer = self.viewer
        layer = self.layer(create=False)
        cells = cells_layer(viewer, self.session) if viewer is not None else None
        if layer is None or cells is None:
            return
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(cells))

    def _on_changed(self, ids) -> None:
        from ..layers import set_selected_cells

        layer = self.layer(create=len(ids) > 0)
        cells = cells_layer(self.viewer, self.session)
        if layer is None or cells is None:
            return
        feats = cells.features
        label_of = pd.Series(feats["index"].to_numpy(np.int64), index=feats[CELL_ID].astype(str).to_numpy())
        labels = label_of.reindex(ids).dropna().to_numpy(np.int64)
        layer.visible = len(labels) > 0  # an empty outline layer would still re-slice on every pan
        if _outlined(layer, labels):  # another dock's view drew this selection already
            return
        set_selected_cells(layer, labels)


def _outlined(layer, labels: np.ndarray) -> bool:
    """True when the outline layer already shows exactly the cells ``labels``."""
    from ..layers import lookup_table

    lut = lookup_table(layer)
    labels = labels[(labels > 0) & (labels < len(lut))]
    on = np.flatnonzero(lut)
    return len(on) == len(np.unique(labels)) and bool(np.isin(on, labels).all())


def cells_layer(viewer, session):
    """The run's cells Labels layer (by the session's layer name, else the first cells layer), or None."""
    from .._constants import KIND_CELLS
    from ..layers import find_layers

    name = session.layer_names.get("cells")
    if name and name in viewer.layers:
        return viewer.layers[name]
    found = find_layers(viewer.layers, KIND_CELLS)
    return found[0] if found else None
