"""Why one cell got its label: the evidence behind a transferred label (Qt-free).

:class:`EvidenceIndex` is built once per transfer result (unit-length reference embeddings,
the row of every cell, the query's counts on the shared panel); :meth:`EvidenceIndex.cell`
then gives, in about a millisecond, a :class:`CellEvidence`:

* the cell's sentence and its counts on the shared panel;
* the label the engine gave (``transferred_type``, ``confidence``, ``runner_up``,
  ``unknown_score``, ``unassigned_reason``) and the current label (after the threshold and
  any manual edit);
* its ``k`` nearest reference cells (label and cosine similarity) and the distance-weighted
  vote per label they cast (weight ``1 / (1 - cosine + 0.001)``, as the kNN transfer
  votes). The default method is an ensemble, whose final label and confidence are the
  table's: the vote is shown as evidence beside them, not as the call itself;
* the marker check: which reference markers of its label and runner-up it expresses
  (:func:`napari_cellama.core.reference_markers.marker_check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_N_NEIGHBORS,
    DISTANCE,
    RUNNER_UP,
    SENTENCE,
    TRANSFERRED_TYPE,
    UNASSIGNED_REASON,
    UNKNOWN_SCORE,
)
from ..validators import CellamaInputError
from .reference_markers import marker_check

_EPS = 1e-3


@dataclass
class CellEvidence:
    """The evidence behind one cell's label (see the module docstring)."""

    cell_id: str
    label: str
    """Current label (threshold and manual edits applied)."""
    transferred_type: str
    confidence: float
    runner_up: str | None
    unknown_score: float | None
    unassigned_reason: str
    distance: float | None
    sentence: str
    counts: pd.Series
    """Detected counts of the cell on the shared panel, highest first."""
    neighbours: pd.DataFrame
    """``reference_cell``, ``label``, ``similarity`` of the k nearest reference cells."""
    vote: pd.Series
    """Share of the distance-weighted vote per label, highest first."""
    reference_rows: np.ndarray
    """Rows of the neighbours in the reference embeddings (for the UMAP)."""
    markers: pd.DataFrame = field(default_factory=pd.DataFrame)
    """:func:`~napari_cellama.core.reference_markers.marker_check` of the label and runner-up."""
    label_source: str = ""
    reviewed: bool = False

    def summary(self) -> str:
        """A few lines for the status bar or a report."""
        vote = ", ".join(f"{t} {s:.0%}" for t, s in self.vote.head(3).items())
        ru = f", runner-up {self.runner_up}" if self.runner_up else ""
        return (f"{self.cell_id}: {self.label} (confidence {self.confidence:.2f}{ru}); "
                f"{len(self.neighbours)} nearest reference cells vote {vote}")


class EvidenceIndex:
    """What the evidence of any cell of one transfer needs, prepared once."""

    def __init__(self, result, query=None, markers: pd.DataFrame | None = None, *, k: int | None = None):
        if result is None or getattr(result, "query_embeddings", None) is None:
            raise CellamaInputError("no embeddings: run a transfer to see the evidence behind a label")
        self.result = result
        self.table = result.table
        self.k = int(k or result.params.get("k") or DEFAULT_N_NEIGHBORS)
        ref = np.asarray(result.reference_embeddings, dtype=np.float32)
        norm = np.linalg.norm(ref, axis=1, keepdims=True)
        self._ref = ref / np.where(norm > 0, norm, 1)
        self._ref_labels = np.asarray(result.reference_labels, dtype=object).astype(str)
        self._ref_ids = np.asarray(pd.Series(result.reference_labels).index, dtype=object).astype(str)
        self._cats, self._codes = np.unique(self._ref_labels, return_inverse=True)
        self._rows = pd.Index(self.table.index.astype(str))
        self.markers = markers if markers is not None else pd.DataFrame(
            columns=["cell_type", "rank", "gene", "score", "fraction_in", "fraction_out", "mean_in"])
        self._counts = None
        if query is not None:
            genes = list(result.panel.shared_genes) if result.panel is not None else list(query.var_names)
            cols = query.var_names.get_indexer(genes)
            genes = [g for g, c in zip(genes, cols, strict=True) if c >= 0]
            cols = cols[cols >= 0]
            x = query.X
            x = sp.csr_matrix(x) if not sp.isspmatrix_csr(x) else x
            self._counts = x
            self._count_cols = cols
            self._count_genes = np.asarray(genes, dtype=object)
            self._count_rows = pd.Index(query.obs_names.astype(str))

    def neighbours(self, cell_id: str) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
        """``(neighbours, vote, reference rows)`` of one query cell."""
        row = self._row(cell_id)
        q = np.asarray(self.result.query_embeddings[row], dtype=np.float32)
        n = float(np.linalg.norm(q))
        sim = self._ref @ (q / n if n > 0 else q)
        k = min(self.k, len(sim))
        top = np.argpartition(-sim, k - 1)[:k] if k < len(sim) else np.arange(len(sim))
        top = top[np.lexsort((top, -sim[top]))]
        nb = pd.DataFrame({"reference_cell": self._ref_ids[top], "label": self._ref_labels[top],
                           "similarity": sim[top].astype(float)})
        w = 1.0 / (np.clip(1.0 - sim[top].astype(np.float64), 0.0, 2.0) + _EPS)
        scores = np.bincount(self._codes[top], weights=w, minlength=len(self._cats))
        vote = pd.Series(scores / max(scores.sum(), 1e-12), index=self._cats, name="vote")
        vote = vote[vote > 0].sort_values(ascending=False, kind="stable")
        return nb, vote, top

    def counts(self, cell_id: str) -> pd.Series:
        """The cell's detected counts on the shared panel, highest first (empty without a query)."""
        if self._counts is None:
            return pd.Series(dtype=float)
        i = self._count_rows.get_indexer([str(cell_id)])[0]
        if i < 0:
            return pd.Series(dtype=float)
        row = self._counts[i]
        dense = np.asarray(row[:, self._count_cols].todense()).ravel()
        nz = np.flatnonzero(dense)
        s = pd.Series(dense[nz].astype(float), index=self._count_genes[nz], name="counts")
        return s.sort_values(ascending=False, kind="stable")

    def cell(self, cell_id: str, annotation=None) -> CellEvidence:
        """The :class:`CellEvidence` of ``cell_id`` (``annotation``: current label and review state)."""
        cell_id = str(cell_id)
        row = self._row(cell_id)
        r = self.table.iloc[row]
        nb, vote, top = self.neighbours(cell_id)
        label, source, reviewed = str(r.get(CELL_TYPE, r.get(TRANSFERRED_TYPE, ""))), "", False
        if annotation is not None:
            pos = annotation.cell_ids.get_indexer([cell_id])[0]
            if pos >= 0:
                label = str(annotation.cell_type.iloc[pos])
                source = str(annotation.label_source.iloc[pos])
                reviewed = bool(annotation.reviewed.iloc[pos])
        runner = r.get(RUNNER_UP)
        runner = None if runner is None or (isinstance(runner, float) and np.isnan(runner)) else str(runner)
        runner = runner or None
        counts = self.counts(cell_id)
        transferred = str(r.get(TRANSFERRED_TYPE, label))
        types = [label] + ([transferred] if transferred != label else []) + ([runner] if runner else [])
        check = marker_check(self.markers, counts, types) if len(self.markers) else pd.DataFrame(
            columns=["cell_type", "gene", "counts", "detected", "fraction_in"])
        return CellEvidence(
            cell_id=cell_id, label=label, transferred_type=transferred,
            confidence=float(r.get(CONFIDENCE, np.nan)), runner_up=runner,
            unknown_score=_float(r.get(UNKNOWN_SCORE)), unassigned_reason=str(r.get(UNASSIGNED_REASON, "") or ""),
            distance=_float(r.get(DISTANCE)), sentence=str(r.get(SENTENCE, "")), counts=counts,
            neighbours=nb, vote=vote, reference_rows=top, markers=check, label_source=source, reviewed=reviewed)

    def _row(self, cell_id: str) -> int:
        i = self._rows.get_indexer([str(cell_id)])[0]
        if i < 0:
            raise CellamaInputError(f"cell {cell_id!r} is not in this transfer")
        return int(i)


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f
