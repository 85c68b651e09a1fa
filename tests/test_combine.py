"""Prototype labels where the transfer says Unknown (issue 17 item 9), source recorded per cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_cellama._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    LABEL_SOURCE,
    REASON_LOW_CONFIDENCE,
    REASON_UNKNOWN,
    RUNNER_UP,
    TRANSFER_CALL,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
)
from napari_cellama.core import Annotation, combine_annotations
from napari_cellama.validators import CellamaInputError


def _transfer():
    ids = [f"c{i}" for i in range(6)]
    return pd.DataFrame({
        CELL_TYPE: ["T", UNKNOWN, "B", UNASSIGNED, "T", UNKNOWN],
        TRANSFERRED_TYPE: ["T", "B", "B", "T", "T", "T"],
        CONFIDENCE: [0.9, 0.8, 0.3, 0.2, 0.95, 0.7],
        DISTANCE: [0.1, 0.5, 0.2, 0.3, 0.1, 0.6],
        RUNNER_UP: ["B", "T", "T", "B", "B", "B"],
        UNASSIGNED_REASON: ["", REASON_UNKNOWN, "", REASON_LOW_CONFIDENCE, "", REASON_UNKNOWN],
    }, index=ids)


def _prototypes():
    ids = [f"c{i}" for i in range(6)][::-1]  # another row order: matched by cell id
    return pd.DataFrame({
        CELL_TYPE: [UNASSIGNED, "Erythroid", "Neutrophil", "Erythroid", "Stromal", "T"],
        TRANSFERRED_TYPE: ["Erythroid", "Erythroid", "Neutrophil", "Erythroid", "Stromal", "T"],
        CONFIDENCE: [0.1, 0.6, 0.7, 0.9, 0.5, 0.4],
        DISTANCE: [0.4, 0.3, 0.35, 0.2, 0.3, 0.25],
        RUNNER_UP: ["T", "T", "B", "Stromal", "T", "B"],
    }, index=ids)


def test_prototypes_fill_the_unknown_cells_only():
    out = combine_annotations(_transfer(), _prototypes(), method="knn")
    assert list(out.index) == [f"c{i}" for i in range(6)]
    # c1 Unknown -> prototype Stromal; c5 Unknown but the prototypes left it Unassigned: stays Unknown
    assert out.loc["c1", TRANSFERRED_TYPE] == "Stromal" and out.loc["c1", CONFIDENCE] == pytest.approx(0.5)
    assert out.loc["c1", LABEL_SOURCE] == "prototypes" and out.loc["c1", UNASSIGNED_REASON] == ""
    assert out.loc["c1", RUNNER_UP] == "T" and out.loc["c1", TRANSFER_CALL] == UNKNOWN
    assert out.loc["c5", LABEL_SOURCE] == "transfer:knn" and out.loc["c5", UNASSIGNED_REASON] == REASON_UNKNOWN
    assert (out.loc[["c0", "c2", "c3", "c4"], LABEL_SOURCE] == "transfer:knn").all()
    assert out.loc["c3", TRANSFERRED_TYPE] == "T"  # Unassigned (low confidence) is not Unknown
    assert out.loc["c2", "prototype_cell_type"] == "Erythroid"

    ann = Annotation(out)
    assert ann.cell_type["c1"] == "Stromal" and ann.cell_type["c5"] == UNKNOWN
    assert ann.label_source["c1"] == "prototypes" and ann.label_source["c0"] == "transfer:knn"
    ann.assign(["c1"], "Fibroblast", reason="review")
    t = ann.table
    assert t.loc["c1", LABEL_SOURCE] == "manual:review" and t.loc["c2", LABEL_SOURCE] == "transfer:knn"
    assert Annotation(t).label_source["c1"] == "manual:review"  # restored from the exported table


def test_unassigned_and_low_confidence_cells_too():
    out = combine_annotations(_transfer(), _prototypes(), where="unassigned", min_confidence=0.5)
    # c3 Unassigned (low confidence), c2 below 0.5 -> prototypes; c0/c4 confident: transfer
    assert out.loc["c3", TRANSFERRED_TYPE] == "Neutrophil" and out.loc["c3", LABEL_SOURCE] == "prototypes"
    assert out.loc["c2", TRANSFERRED_TYPE] == "Erythroid" and out.loc["c2", LABEL_SOURCE] == "prototypes"
    assert out.loc["c0", LABEL_SOURCE] == "transfer" and out.loc["c4", TRANSFERRED_TYPE] == "T"


def test_manual_labels_are_kept():
    ann = Annotation(_transfer())
    ann.assign(["c1"], "Plasma", reason="review")
    out = combine_annotations(ann.table, _prototypes(), method="knn")
    assert out.loc["c1", LABEL_SOURCE] == "manual:review" and out.loc["c1", TRANSFER_CALL] == UNKNOWN
    again = Annotation(out)
    assert again.cell_type["c1"] == "Plasma" and again.label_source["c1"] == "manual:review"


def test_bad_inputs_say_what_to_do():
    with pytest.raises(CellamaInputError, match="where prototype labels apply"):
        combine_annotations(_transfer(), _prototypes(), where="everywhere")
    other = _prototypes()
    other.index = [f"x{i}" for i in range(6)]
    with pytest.raises(CellamaInputError, match="share no cell id"):
        combine_annotations(_transfer(), other)
    with pytest.raises(CellamaInputError, match="lacks column"):
        combine_annotations(_transfer(), _prototypes().drop(columns=[CONFIDENCE]))
    assert np.isnan(combine_annotations(_transfer(), _prototypes().iloc[:3])
                    .loc["c0", "prototype_confidence"])  # cells without a prototype row keep the transfer
