"""What the transfer dock's "show" control shows, and the legend that goes with it.

The maps are ``cell types``, ``confidence`` and ``distance to reference`` and, once the
session holds niche clusters (the niche dock ran, or an opened session carried them),
``niche clusters``. Choosing one shows that layer and hides the others, and the legend
below always describes what is shown: the cell-type legend for ``cell types``, a niche
legend (the niche palette, which no cell type uses) for ``niche clusters``. When the niche
dock shows its clusters the control follows (it reads ``niche clusters``), so the words in
the dock and the colours on the tissue never disagree.
"""

from __future__ import annotations

from .._constants import CELL_ID

TYPES_LAYER = "cell types"
CONFIDENCE_LAYER = "confidence"
DISTANCE_LAYER = "distance to reference"
NICHE_MAP = "niche clusters"
MAPS = (TYPES_LAYER, CONFIDENCE_LAYER, DISTANCE_LAYER)


class MapsMixin:
    """The "show" control and the two legends of the transfer dock (needs ``viewer``,
    ``session``, ``map_combo``, ``legend``, ``_layers``)."""

    def _build_niche_legend(self):
        from .legend import CategoryLegend

        self.niche_legend = CategoryLegend("Niches (niche palette; tick to show)", ("niche", "cells"),
                                           label=lambda name: f"niche {name}")
        self.niche_legend.visibility_changed.connect(self._on_niche_visibility)
        self.niche_legend.row_clicked.connect(self._select_niche)
        self.niche_legend.setVisible(False)
        self.session.events.niche.connect(self._on_niche)
        return self.niche_legend

    def niche_layer(self):
        """The ``niche clusters`` layer (None when no niche is shown)."""
        from ..layers import layer_info

        return next((layer for layer in self.viewer.layers if layer_info(layer).get("niche")), None)

    def _on_niche(self, state) -> None:
        """The session's niches changed: offer them in "show" and show them (the niche dock has
        just drawn them over the maps), or fall back to the cell types."""
        has = state is not None and self.niche_layer() is not None
        index = self.map_combo.findText(NICHE_MAP)
        self.map_combo.blockSignals(True)
        if has and index < 0:
            self.map_combo.addItem(NICHE_MAP)
        elif not has and index >= 0:
            self.map_combo.removeItem(index)
        self.map_combo.blockSignals(False)
        if has:
            clusters = state.clusters.astype(str)
            names = sorted(clusters.unique(), key=_natural)
            self.niche_legend.set_rows(names, clusters.value_counts(), state.colors)
            self.show_map(NICHE_MAP)
        else:
            self.niche_legend.set_rows([], {}, {})
            self.show_map(TYPES_LAYER if index >= 0 or self.map_combo.currentText() == NICHE_MAP
                          else self.map_combo.currentText())

    def show_map(self, name: str) -> None:
        """Show one map (cell types, confidence, distance, niche clusters), hide the others;
        the legend shown is the one of that map."""
        if name == NICHE_MAP and self.map_combo.findText(NICHE_MAP) < 0:
            name = TYPES_LAYER
        for key in MAPS:
            layer = self._layers.get(key)
            if layer is not None and layer in self.viewer.layers:
                layer.visible = key == name
        niche = self.niche_layer()
        if niche is not None:
            niche.visible = name == NICHE_MAP
        self.legend.setVisible(name != NICHE_MAP)
        self.niche_legend.setVisible(name == NICHE_MAP)
        if self.map_combo.currentText() != name:
            self.map_combo.blockSignals(True)
            self.map_combo.setCurrentText(name)
            self.map_combo.blockSignals(False)

    def shown_map(self) -> str:
        """The map shown on the tissue (the visible one of ours, topmost first)."""
        niche = self.niche_layer()
        if niche is not None and niche.visible:
            return NICHE_MAP
        return next((key for key in MAPS if (layer := self._layers.get(key)) is not None
                     and layer in self.viewer.layers and layer.visible), "")

    def _on_niche_visibility(self, hidden) -> None:
        from ..layers import set_niche_hidden

        if (layer := self.niche_layer()) is not None:
            set_niche_hidden(layer, hidden)

    def _select_niche(self, name: str) -> None:
        state = self.session.niche
        if state is not None:
            clusters = state.clusters.astype(str)
            self.session.selection.select(clusters.index[clusters.to_numpy() == str(name)].rename(CELL_ID))


def _natural(name: str):
    return (0, int(name)) if str(name).isdigit() else (1, str(name))
