"""Rename a type (issue 17 item 10): everywhere - labels, table, colours, history, exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cellama._constants import (
    CONFIDENCE,
    DISTANCE,
    REASON_UNKNOWN,
    RUNNER_UP,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
)
from napari_cellama.core import Annotation
from napari_cellama.core.palette import TypeColors, to_hex
from napari_cellama.validators import CellamaInputError


def _table():
    ids = [f"c{i}" for i in range(6)]
    return pd.DataFrame({
        TRANSFERRED_TYPE: ["T", "T", "B", "B", "NK", "T"],
        RUNNER_UP: ["B", "NK", "T", "T", "T", "B"],
        CONFIDENCE: [0.9, 0.2, 0.8, 0.7, 0.9, 0.9],
        DISTANCE: 0.1,
        UNASSIGNED_REASON: ["", "", "", "", "", REASON_UNKNOWN],
    }, index=ids)


def test_rename_reaches_labels_table_colours_history_and_restore():
    palette = TypeColors()
    seen = []
    palette.renamed.connect(lambda a, b: seen.append((a, b)))
    ann = Annotation(_table(), palette=palette, min_confidence=0.5)
    colour = ann.color_of("B")
    ann.assign(["c4"], "B", reason="review")
    ann.set_visible("B", False)
    events = []
    ann.types_changed.connect(lambda: events.append("types"))
    ann.labels_changed.connect(events.append)
    assert ann.rename_type("B", "  B cell ") == "B cell"
    assert events == ["types", "rename"] and seen == [("B", "B cell")]
    assert "B" not in ann.categories and ann.color_of("B cell") == colour == palette.color("B cell")
    assert ann.cell_type.astype(str).tolist() == ["T", UNASSIGNED, "B cell", "B cell", "B cell", UNKNOWN]
    assert not ann.is_visible("B cell")
    t = ann.table
    assert t[TRANSFERRED_TYPE].tolist()[:4] == ["T", "T", "B cell", "B cell"]
    assert t[RUNNER_UP].tolist()[:3] == ["B cell", "NK", "T"]
    assert ann.history_records()[-1]["after"] == "B cell"
    ann.set_threshold(0.0)  # the threshold still works on renamed types
    assert ann.cell_type["c1"] == "T"
    # a saved and reopened annotation has the new name
    again = Annotation.from_state(t, ann.state())
    assert again.cell_type.astype(str).tolist() == ann.cell_type.astype(str).tolist()
    assert to_hex(again.color_of("B cell")) == to_hex(colour)
    assert again.undo() is not None and again.cell_type["c4"] == "NK"


def test_rename_onto_an_existing_type_merges():
    ann = Annotation(_table())
    ann.assign(["c0"], "NK")
    ann.rename_type("NK", "T")
    assert (ann.cell_type.astype(str)[["c0", "c4"]] == "T").all()
    assert ann.counts().get("NK", 0) == 0
    ann.undo()  # the edit now gives back the merged name
    assert ann.cell_type["c0"] == "T"


def test_reserved_names_and_unknown_types():
    ann = Annotation(_table())
    with pytest.raises(CellamaInputError, match="method's call"):
        ann.rename_type(UNASSIGNED, "Other")
    with pytest.raises(CellamaInputError, match="reserved"):
        ann.rename_type("T", UNKNOWN)
    with pytest.raises(CellamaInputError, match="unknown cell type"):
        ann.rename_type("nope", "x")
    with pytest.raises(CellamaInputError, match="name"):
        ann.rename_type("T", "  ")
    assert np.all(ann.cell_type.astype(str) != "x")
