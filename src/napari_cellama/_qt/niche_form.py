"""The niche dock's parameter form: cell types, neighbourhood, sentence, method, model.

:class:`NicheFormMixin` builds the "Parameters" box and turns it into the keyword values of
:func:`napari_cellama.core.niche.iter_niches` (:meth:`~NicheFormMixin.parameters`); the
cell types offered are the current labels of the session's annotation.
"""

from __future__ import annotations

import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSpinBox,
    QStackedWidget,
)

from .._constants import (
    DEFAULT_EMBED_MODE,
    DEFAULT_NICHE_RADIUS,
    DEFAULT_NICHE_WIDGET_CLUSTERS,
    DEFAULT_NICHE_WIDGET_RESOLUTION,
    DEFAULT_SPATIAL_NEIGHBORS,
    EMBED_MODES,
    NICHE_METHOD_KMEANS,
    NICHE_METHOD_LEIDEN,
    NICHE_MODE_BOTH,
    NICHE_MODE_NICHE,
    UNASSIGNED,
)

NEIGHBOURHOODS = (("k nearest cells", "k"), ("within a radius (µm)", "radius"))
SENTENCE_MODES = (("genes + niche", NICHE_MODE_BOTH), ("niche only", NICHE_MODE_NICHE))
METHODS = (("Leiden", NICHE_METHOD_LEIDEN), ("KMeans", NICHE_METHOD_KMEANS))
RESOLUTION_TIP = (
    "Leiden resolution: higher gives more, smaller clusters.\n"
    "The default is 0.3, not scanpy's 1.0: niche embeddings of one cell type are close to each "
    "other, and at 1.0 Leiden over-splits them (on the demo run it cuts the 3 planted niches of "
    "CD14+ monocytes into 7 clusters, 0.3 finds 3). Raise it to look for finer niches; "
    "'Re-cluster' tries a new value without embedding again."
)


class NicheFormMixin:
    """The parameter form of the niche dock (needs ``annotation``)."""

    def _build_params_box(self) -> QGroupBox:
        params = QGroupBox("Parameters")
        form = QFormLayout(params)
        self.types_list = QListWidget()
        self.types_list.setSelectionMode(QAbstractItemView.MultiSelection)
        self.types_list.setMaximumHeight(120)
        self.types_list.setToolTip("the cell types to split by niche (current labels of the transfer; "
                                   "every labelled cell still counts as a neighbour)")
        self.neighbourhood_combo = QComboBox()
        for text, key in NEIGHBOURHOODS:
            self.neighbourhood_combo.addItem(text, key)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 100)
        self.k_spin.setValue(DEFAULT_SPATIAL_NEIGHBORS)
        self.k_spin.setToolTip("spatial neighbours (nearest first) named in each niche sentence")
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(1.0, 1000.0)
        self.radius_spin.setDecimals(1)
        self.radius_spin.setSuffix(" µm")
        self.radius_spin.setValue(DEFAULT_NICHE_RADIUS)
        self.radius_spin.setToolTip("every cell whose centroid is this close; a large radius makes long "
                                    "sentences that the model cuts (the farthest neighbours are lost)")
        self.neighbourhood_stack = QStackedWidget()
        self.neighbourhood_stack.addWidget(self.k_spin)
        self.neighbourhood_stack.addWidget(self.radius_spin)
        self.neighbourhood_combo.currentIndexChanged.connect(self.neighbourhood_stack.setCurrentIndex)
        nb_row = QHBoxLayout()
        nb_row.addWidget(self.neighbourhood_combo, 1)
        nb_row.addWidget(self.neighbourhood_stack)
        self.mode_combo = QComboBox()
        for text, key in SENTENCE_MODES:
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip("genes + niche: 'Top genes are ... . Nearest cells are A, B, ...'\n"
                                   "niche only: 'Nearest cells are A, B, ...'")
        self.method_combo = QComboBox()
        for text, key in METHODS:
            self.method_combo.addItem(text, key)
        self.resolution_spin = QDoubleSpinBox()
        self.resolution_spin.setRange(0.01, 10.0)
        self.resolution_spin.setSingleStep(0.05)
        self.resolution_spin.setDecimals(2)
        self.resolution_spin.setValue(DEFAULT_NICHE_WIDGET_RESOLUTION)
        self.resolution_spin.setToolTip(RESOLUTION_TIP)
        self.n_clusters_spin = QSpinBox()
        self.n_clusters_spin.setRange(2, 100)
        self.n_clusters_spin.setValue(DEFAULT_NICHE_WIDGET_CLUSTERS)
        self.n_clusters_spin.setToolTip("KMeans: the number of niches expected")
        self.method_stack = QStackedWidget()
        self.method_stack.addWidget(self.resolution_spin)
        self.method_stack.addWidget(self.n_clusters_spin)
        self.method_combo.currentIndexChanged.connect(self.method_stack.setCurrentIndex)
        self.method_combo.setToolTip(RESOLUTION_TIP)
        method_row = QHBoxLayout()
        method_row.addWidget(self.method_combo, 1)
        method_row.addWidget(self.method_stack)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default: offline all-MiniLM-L6-v2")
        self.model_edit.setToolTip("a sentence-transformers model name or local folder (e.g. a fine-tuned one)")
        self.embed_mode_combo = QComboBox()
        self.embed_mode_combo.addItems(list(EMBED_MODES))
        self.embed_mode_combo.setCurrentText(DEFAULT_EMBED_MODE)
        self.embed_mode_combo.setToolTip("how sentences are embedded (as in the transfer widget)")
        self.cache_check = QCheckBox("cache embeddings on disk (re-runs are fast)")
        self.cache_check.setChecked(True)
        form.addRow("cell types", self.types_list)
        form.addRow("neighbourhood", nb_row)
        form.addRow("sentence", self.mode_combo)
        form.addRow("method", method_row)
        form.addRow("model", self.model_edit)
        form.addRow("embedding", self.embed_mode_combo)
        form.addRow("", self.cache_check)
        return params

    def type_counts(self) -> pd.Series:
        """Cells per current label (``Unassigned`` left out): the types that can be clustered."""
        if self.annotation is None:
            return pd.Series(dtype="int64")
        counts = self.annotation.counts()
        return counts[counts.index.astype(str) != UNASSIGNED]

    def _fill_types(self, *_cause) -> None:
        chosen = set(self.selected_types())
        self.types_list.clear()
        for name, n in self.type_counts().items():
            item = QListWidgetItem(f"{name} ({int(n):,})")
            item.setData(Qt.UserRole, str(name))
            self.types_list.addItem(item)
            item.setSelected(str(name) in chosen)

    def selected_types(self) -> list[str]:
        return [self.types_list.item(i).data(Qt.UserRole) for i in range(self.types_list.count())
                if self.types_list.item(i).isSelected()]

    def set_cell_types(self, names) -> None:
        """Select exactly these cell types in the list (as clicking them does)."""
        wanted = {str(n) for n in ([names] if isinstance(names, str) else names)}
        for i in range(self.types_list.count()):
            item = self.types_list.item(i)
            item.setSelected(item.data(Qt.UserRole) in wanted)

    def parameters(self) -> dict:
        by_radius = self.neighbourhood_combo.currentData() == "radius"
        leiden = self.method_combo.currentData() == NICHE_METHOD_LEIDEN
        return {
            "cell_types": self.selected_types(),
            "k": None if by_radius else int(self.k_spin.value()),
            "radius": float(self.radius_spin.value()) if by_radius else None,
            "mode": self.mode_combo.currentData(),
            "resolution": float(self.resolution_spin.value()) if leiden else None,
            "n_clusters": None if leiden else int(self.n_clusters_spin.value()),
            "model": self.model_edit.text().strip() or None,
            "device": "auto",
            "embed_mode": self.embed_mode_combo.currentText(),
            "cache": self.cache_check.isChecked(),
        }

    def set_method(self, method: str, value) -> None:
        """Choose Leiden (``value`` = resolution) or KMeans (``value`` = number of clusters)."""
        self.method_combo.setCurrentIndex([key for _t, key in METHODS].index(method))
        if method == NICHE_METHOD_LEIDEN:
            self.resolution_spin.setValue(float(value))
        else:
            self.n_clusters_spin.setValue(int(value))
