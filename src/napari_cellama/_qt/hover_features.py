"""The annotation's columns in the cells layer's hover features, kept in step cheaply.

Dock 2 shows each cell's label, confidence, runner-up, source and sentence when the pointer
hovers it (the cells layer's ``features``). Rebuilding that 84k-row table on every edit cost
~0.1 s per review-queue key press; an edit only changes ``cell_type`` and ``source``, so
:class:`HoverFeatures` writes just those two columns in place, through the row positions it
computed once (a full rebuild when the layer, its features table or the annotation changed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import CELL_ID, CELL_TYPE, SOURCE

EDITED_COLUMNS = (CELL_TYPE, SOURCE)
"""The hover columns an edit (or the threshold) can change."""


class HoverFeatures:
    """Writes an annotation's ``columns`` into a cells layer's hover features."""

    def __init__(self, columns) -> None:
        self.columns = tuple(columns)
        self._key = None
        self._pos: np.ndarray | None = None

    def update(self, layer, annotation, labels_only: bool = False) -> bool:
        """Write the columns (``labels_only``: only :data:`EDITED_COLUMNS`, in place, when the
        layer's features are still the ones written last); True when it wrote in place."""
        from ..layers import add_cell_features

        if layer is None or annotation is None:
            return False
        feats = layer.features
        key = (id(layer), id(annotation), id(feats), len(feats))
        if labels_only and key == self._key and all(c in feats for c in EDITED_COLUMNS):
            pos = self._pos
            for col, values in ((CELL_TYPE, annotation.cell_type), (SOURCE, annotation.source)):
                if col in self.columns:
                    out = values.astype(object).to_numpy()[np.maximum(pos, 0)]
                    out[pos < 0] = np.nan
                    feats[col] = out
            return True
        t = annotation.table
        add_cell_features(layer, t[[c for c in self.columns if c in t.columns]])
        feats = layer.features
        self._pos = pd.Index(t.index.astype(str)).get_indexer(feats[CELL_ID].astype(str))
        self._key = (id(layer), id(annotation), id(feats), len(feats))
        return False
