"""Label transfer by classifier heads (``method`` ``head`` / ``ensemble``) with an Unknown call.

Per query cell: the winning label of the heads' averaged probabilities (``transferred_type``),
its probability (``confidence``), the second label (``runner_up``), the cosine distance to
the nearest reference sentence and that cell (``distance``, ``nearest_reference``, as in
the kNN), the :mod:`unknown score <.unknown>` for the predicted type, and ``cell_type`` after
the thresholds (``Unknown`` / ``Unassigned`` with an ``unassigned_reason``).

Identical sentences have identical embeddings, so the embedding head and the nearest
reference sentence are computed once per distinct sentence; the expression model and the
unknown score see every cell's own counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import (
    CONFIDENCE,
    DISTANCE,
    NEAREST_REFERENCE,
    RUNNER_UP,
    STAGE_CLASSIFY,
    TRANSFERRED_TYPE,
    UNASSIGNED_REASON,
    UNKNOWN_SCORE,
)
from .transfer_options import TransferOptions


@dataclass
class CellSet:
    """One side of a transfer: sentence embeddings, shared-panel counts, cell ids, labels."""

    embeddings: np.ndarray
    counts: object
    index: pd.Index
    labels: np.ndarray | None = None
    sentence_codes: np.ndarray | None = None
    """Per cell, the code of its distinct sentence (cells with equal codes share an embedding row
    of ``embeddings``, which then holds one row per distinct sentence); None: one row per cell."""
    clusters: np.ndarray | None = None
    """Query only: a cluster id per cell for the cluster evidence of the unknown score (None:
    Leiden on the cells' expression when ``TransferOptions.unknown_clusters`` is on)."""

    def per_cell(self, values: np.ndarray) -> np.ndarray:
        return values if self.sentence_codes is None else values[self.sentence_codes]

    def per_cell_embeddings(self) -> np.ndarray:
        return self.per_cell(self.embeddings)


def _iter_nearest(query: np.ndarray, reference: np.ndarray):
    from .transfer import iter_cosine_knn

    idx, sim = yield from iter_cosine_knn(query, reference, 1)
    return idx[:, 0], np.clip(1.0 - sim[:, 0], 0.0, 2.0).astype(np.float32)


def fit_method_heads(reference: CellSet, options: TransferOptions, *, expression=None):
    """The :class:`~.classify.HeadModel` of ``options.method`` fitted on ``reference`` (its
    embeddings, shared-panel counts and labels; ``expression``: other values of its shared panel
    to fit the expression model on, e.g. log-normalised ones; None: its counts)."""
    from .classify import fit_heads

    expr = reference.counts if expression is None else expression
    return fit_heads(reference.embeddings, expr, reference.labels, method=options.method, c=options.head_c,
                     expression_weight=options.expression_weight, seed=options.seed,
                     full_genes=options.full_weight_genes)


def sentence_genes(query: CellSet, options: TransferOptions):
    """Per query cell, the genes its sentence names (for the ensemble's per-cell weights,
    :func:`~.classify.embedding_weights`); None when the sentences carry metadata (they then hold
    more than the counts, and the weights stay constant)."""
    from .classify import detected_genes

    return None if options.metadata else detected_genes(query.counts)


def iter_head_transfer(query: CellSet, reference: CellSet, options: TransferOptions | None = None, *,
                       heads=None, cluster_evidence=None) -> Iterator:
    """Generator: yields ``(stage, done, total)``, returns the per-cell table (see module doc).

    ``heads``: a :class:`~.classify.HeadModel` already fitted on ``reference`` with these
    ``options`` (e.g. by the pipeline for the surrogate check); None: fitted here.
    ``cluster_evidence``: the :class:`~.surrogate_label.ClusterEvidence` of this query and
    reference already computed (by the surrogate check); None: computed here."""
    from .classify import log_normalise
    from .unknown import apply_unknown, unknown_scores

    options = options or TransferOptions()
    yield (STAGE_CLASSIFY, 0, 4)
    ref_expr = log_normalise(reference.counts)
    query_expr = log_normalise(query.counts)
    model = heads if heads is not None else fit_method_heads(reference, options)
    yield (STAGE_CLASSIFY, 1, 4)
    emb_p = query.per_cell(model.embedding_proba(query.embeddings))
    expr_p = None if model.expression_head is None else model.expression_proba(query.counts)
    proba = model.combine(emb_p, expr_p, sentence_genes(query, options))
    yield (STAGE_CLASSIFY, 2, 4)
    cats = np.asarray([str(c) for c in model.categories], dtype=object)
    order = np.argsort(-proba, axis=1, kind="stable")
    best = order[:, 0]
    conf = proba[np.arange(len(proba)), best].astype(np.float32)
    runner = cats[order[:, 1]] if proba.shape[1] > 1 else np.full(len(proba), "", dtype=object)
    near, dist = yield from _iter_nearest(query.embeddings, reference.embeddings)
    ref_ids = np.asarray(reference.index)
    yield (STAGE_CLASSIFY, 3, 4)
    score = unknown_scores(CellSet(query.embeddings, query_expr, query.index, sentence_codes=query.sentence_codes),
                           CellSet(reference.embeddings, ref_expr, reference.index, reference.labels),
                           cats[best], k=options.unknown_neighbors)
    if options.unknown_clusters:
        from .unknown import with_cluster_evidence

        score, extra = with_cluster_evidence(score, query, reference, detection=options.unknown_detection,
                                             coclustering=options.unknown_coclustering) \
            if cluster_evidence is None \
            else cluster_evidence.apply(score)
    else:
        from .cluster_evidence import UNKNOWN_CALL
        from .unknown import CALL_CELL_ONLY, call_column

        extra = {UNKNOWN_CALL: call_column(len(score), f"{CALL_CELL_ONLY}: cluster evidence switched off")}
    table = pd.DataFrame(
        {
            TRANSFERRED_TYPE: cats[best],
            CONFIDENCE: conf,
            DISTANCE: query.per_cell(dist),
            RUNNER_UP: runner,
            NEAREST_REFERENCE: ref_ids[query.per_cell(near)],
            UNKNOWN_SCORE: score,
            UNASSIGNED_REASON: np.full(len(best), "", dtype=object),
            **extra,
        },
        index=pd.Index(query.index),
    )
    apply_unknown(table, options.unknown_alpha if options.calls_unknown else None,
                  min_confidence=options.min_confidence, max_distance=options.max_distance)
    yield (STAGE_CLASSIFY, 4, 4)
    return table
