"""Combine a label transfer with a marker-prototype annotation, cell by cell (Qt-free).

A reference rarely holds every type of a tissue: with a PBMC reference, bone-marrow
erythroid, granulocytic, progenitor and stromal cells come out ``Unknown``, while the
reference-free marker prototypes (:mod:`napari_cellama.core.prototypes`) name them.
:func:`combine_annotations` keeps the transfer's label wherever it has one and takes the
prototype label where the transfer has none:

* ``where="unknown"`` (default): cells the transfer called ``Unknown`` (a type the
  reference lacks);
* ``where="unassigned"``: also cells the transfer left ``Unassigned`` (no shared gene, low
  confidence, far from the reference), and, with ``min_confidence``, cells whose transfer
  confidence is below it (the threshold the user reviews with).

A prototype label is only used when the prototypes gave the cell one (not ``Unassigned``:
no marker detected, or below the prototype run's own minimum confidence). The result is a
transfer-like table (``transferred_type``, ``confidence``, ``distance``, ``runner_up`` of
whichever method labelled the cell) that an :class:`~napari_cellama.core.Annotation` takes
as it is, with per cell:

* ``label_source``: ``transfer:<method>`` or ``prototypes`` (an Annotation keeps it as the
  source of every non-manual cell; manual edits become ``manual:<reason>``);
* ``transfer_call``: what the transfer said (its type, ``Unknown`` or ``Unassigned``);
* ``prototype_cell_type`` / ``prototype_confidence``: what the prototypes said.

Manual labels of a table written by an Annotation (``source`` = ``manual``) are kept and
never replaced. Confidences of the two methods are on different scales (kNN vote share vs
a softmax over prototypes), so one threshold over both is a review aid, not a calibration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import (
    CELL_TYPE,
    COMBINE_WHERE,
    COMBINE_WHERE_UNASSIGNED,
    CONFIDENCE,
    DISTANCE,
    LABEL_SOURCE,
    LABEL_SOURCE_PROTOTYPES,
    PROTOTYPE_PREFIX,
    RUNNER_UP,
    SIMILARITY_GAP,
    SOURCE,
    SOURCE_MANUAL,
    TRANSFER_CALL,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
)
from ..validators import CellamaInputError, check_choice
from .transfer import apply_threshold

TRANSFER_SOURCE = "transfer"
"""``label_source`` of a transferred label whose method is not known."""

__all__ = ["combine_annotations", "prototype_table", "transfer_source"]


def transfer_source(method: str | None = None) -> str:
    """``transfer:<method>`` (``transfer`` when the method is not known)."""
    return f"{TRANSFER_SOURCE}:{method}" if method else TRANSFER_SOURCE


def prototype_table(table: pd.DataFrame) -> pd.DataFrame:
    """A prototype run's per-cell table as an annotation table: ``label_source`` = ``prototypes``."""
    _check(table, "prototype")
    out = table.copy()
    out[LABEL_SOURCE] = LABEL_SOURCE_PROTOTYPES
    return out


def combine_annotations(
    transfer_table: pd.DataFrame,
    prototype_table: pd.DataFrame,
    *,
    where: str = "unknown",
    min_confidence: float | None = None,
    method: str | None = None,
) -> pd.DataFrame:
    """Prototype labels where the transfer has none (see the module docstring).

    ``transfer_table``: a transfer's table (``TransferResult.table``) or an annotation's
    (``Annotation.table``: manual labels kept); ``prototype_table``: ``PrototypeResult.table``.
    ``method`` names the transfer method in ``label_source`` (``transfer:<method>``) when the
    transfer table has no ``label_source`` column. Returns a new table with the transfer
    table's index and rows.
    """
    _check(transfer_table, "transfer")
    _check(prototype_table, "prototype")
    where = check_choice(where, COMBINE_WHERE, "where prototype labels apply")
    if min_confidence is not None and not 0.0 <= float(min_confidence) <= 1.0:
        raise CellamaInputError(f"minimum confidence must be between 0 and 1, got {min_confidence!r}")
    out = transfer_table.copy()
    out.index = out.index.astype(str)
    proto = prototype_table.copy()
    proto.index = proto.index.astype(str)
    if not out.index.isin(proto.index).any():
        raise CellamaInputError("the prototype run and the transfer share no cell id; run both on the same "
                                "Xenium run")
    proto = proto.reindex(out.index)
    call = apply_threshold(out, 0.0, None).astype(object).to_numpy()  # the transfer's own call
    source = _sources(out, method)

    replace = call == UNKNOWN
    if where == COMBINE_WHERE_UNASSIGNED:
        replace |= call == UNASSIGNED
        if min_confidence is not None:
            replace |= out[CONFIDENCE].to_numpy(dtype=float) < float(min_confidence)
    p_type = proto[CELL_TYPE if CELL_TYPE in proto else TRANSFERRED_TYPE].astype(object)
    has_proto = (p_type.notna() & (p_type != UNASSIGNED) & (p_type != "")).to_numpy()
    replace &= has_proto
    if SOURCE in out:
        replace &= (out[SOURCE].astype(str) != SOURCE_MANUAL).to_numpy()

    out[TRANSFER_CALL] = call
    out[f"{PROTOTYPE_PREFIX}{CELL_TYPE}"] = p_type.where(p_type.notna(), UNASSIGNED).to_numpy()
    out[f"{PROTOTYPE_PREFIX}{CONFIDENCE}"] = proto[CONFIDENCE].to_numpy(dtype=float)
    if replace.any():
        rows = np.flatnonzero(replace)
        out[TRANSFERRED_TYPE] = out[TRANSFERRED_TYPE].astype(object)
        out.iloc[rows, out.columns.get_loc(TRANSFERRED_TYPE)] = p_type.to_numpy()[rows]
        for col in (CONFIDENCE, DISTANCE):
            out[col] = out[col].astype(float)
            out.iloc[rows, out.columns.get_loc(col)] = proto[col].to_numpy(dtype=float)[rows]
        if RUNNER_UP in out and RUNNER_UP in proto:
            out[RUNNER_UP] = out[RUNNER_UP].astype(object)
            out.iloc[rows, out.columns.get_loc(RUNNER_UP)] = proto[RUNNER_UP].to_numpy(dtype=object)[rows]
        if UNASSIGNED_REASON in out:  # the prototype label stands: no reason to be Unknown / Unassigned
            out[UNASSIGNED_REASON] = out[UNASSIGNED_REASON].astype(object)
            out.iloc[rows, out.columns.get_loc(UNASSIGNED_REASON)] = ""
        if CELL_TYPE in out and SOURCE not in out:
            out[CELL_TYPE] = out[CELL_TYPE].astype(object)
            out.iloc[rows, out.columns.get_loc(CELL_TYPE)] = p_type.to_numpy()[rows]
        source[rows] = LABEL_SOURCE_PROTOTYPES
    if SIMILARITY_GAP in proto:
        out[f"{PROTOTYPE_PREFIX}{SIMILARITY_GAP}"] = proto[SIMILARITY_GAP].to_numpy(dtype=float)
    out[LABEL_SOURCE] = source
    return out


def _sources(table: pd.DataFrame, method: str | None) -> np.ndarray:
    """Source of each cell's label: the table's own (``manual:<reason>`` kept, so that an
    Annotation restores the reason), else ``transfer:<method>``."""
    default = transfer_source(method)
    if LABEL_SOURCE not in table:
        return np.full(len(table), default, dtype=object)
    src = table[LABEL_SOURCE].astype(object).where(table[LABEL_SOURCE].notna(), default).astype(str)
    return np.where(src == TRANSFER_SOURCE, default, src).astype(object)  # manual:<reason> kept for the Annotation


def _check(table, what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise CellamaInputError(f"the {what} table must be a pandas DataFrame (the result's .table)")
    missing = [c for c in (TRANSFERRED_TYPE, CONFIDENCE, DISTANCE) if c not in table.columns]
    if missing:
        raise CellamaInputError(f"the {what} table lacks column(s) {', '.join(missing)}; use the .table of the "
                                f"{what} result")
