"""Label functions for the surrogate check: a run's *final* label per cell as a function of the
sentence embeddings, and how far each cell is from changing it.

The check (:mod:`.surrogate_check`) must judge the labels users get, which are those of the
transfer method actually run:

``knn`` (:class:`KnnLabelFunction`)
    the distance-weighted cosine kNN vote of :mod:`.transfer`; robustness: the vote margin
    (top share minus second).
``ensemble`` / ``head`` (:class:`HeadLabelFunction`)
    the heads' combined probabilities (:class:`~.classify.HeadModel`: the expression part of a
    cell is fixed, the embedding part comes from the candidate vectors), then the thresholds and
    the Unknown call of :mod:`.unknown` (per-cell unknown score for the predicted type, averaged
    with the cell's query-cluster novelty, against ``1 - alpha``). Robustness per cell has one
    component per decision: the probability margin (top minus second), the unknown score's
    distance to ``1 - alpha``, and, where those thresholds are set, the confidence's distance to
    ``min_confidence`` and the nearest-reference distance's to ``max_distance``.

A label function is called as ``fn(sentence_embeddings, cells)`` (one embedding row per
distinct sentence, ``cells`` the cell rows to label, None: all), or as
``fn.label(vectors, cells, inv)`` (cell ``cells[i]`` has the vector ``vectors[inv[i]]``), and
returns ``(labels, components)``: the final label of each cell and an ``(n_cells, m)`` array of
non-negative robustness components (0 = on the boundary). ``fn.codes`` maps each cell to its
distinct sentence.

The head function reuses the fitted heads and the unknown calibration of :mod:`.unknown`
(fitted once); ``tests/test_surrogate_label.py`` checks that it reproduces
:func:`~.head_transfer.iter_head_transfer`'s ``cell_type`` exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .._constants import DEFAULT_N_NEIGHBORS, UNASSIGNED, UNKNOWN
from .._transfer_defaults import DEFAULT_UNKNOWN_COCLUSTERING


class KnnLabelFunction:
    """The kNN vote's label per cell and its vote margin (one component)."""

    components = ("vote margin",)

    def __init__(self, reference_embeddings: np.ndarray, reference_labels, codes: np.ndarray,
                 k: int = DEFAULT_N_NEIGHBORS):
        from .surrogate_check import knn_score_function

        self.score = knn_score_function(reference_embeddings, reference_labels, k)
        labels = np.asarray(reference_labels, dtype=object)
        self.categories = np.unique(labels[pd.notna(labels)].astype(str))
        self.codes = np.asarray(codes)

    def __call__(self, embeddings: np.ndarray, cells=None):
        return _call(self, embeddings, cells)

    def label(self, rows_embeddings: np.ndarray, cells: np.ndarray, inv: np.ndarray):
        """Labels and components of ``cells`` whose sentence vectors are ``rows_embeddings[inv]``."""
        from .surrogate_check import margins

        s = self.score(rows_embeddings)
        labels = self.categories[s.argmax(axis=1)] if len(s) else np.zeros(0, dtype=object)
        return labels[inv].astype(object), margins(s)[inv][:, None]


def _call(fn, embeddings, cells):
    cells = np.arange(len(fn.codes)) if cells is None else np.asarray(cells)
    rows, inv = np.unique(fn.codes[cells], return_inverse=True)
    return fn.label(np.asarray(embeddings)[rows], cells, inv)


class HeadLabelFunction:
    """The ``head`` / ``ensemble`` method's final ``cell_type`` per cell (see module docstring).

    Build it with :func:`head_label_function`.
    """

    def __init__(self, heads, calibration, codes: np.ndarray, *, expression_proba=None, projected=None,
                 cluster_evidence: ClusterEvidence | None = None, options=None, reference_embeddings=None):
        from .transfer_options import TransferOptions

        self.heads = heads
        self.codes = np.asarray(codes)
        self.options = options or TransferOptions()
        self.categories = np.asarray([str(c) for c in heads.categories], dtype=object)
        self._expr_p = expression_proba
        self._z = projected
        self.cluster_evidence = cluster_evidence
        self._ref = reference_embeddings
        # the calibration with an identity projection: scores() then takes the projected rows
        self._cal = None if calibration is None else dataclasses.replace(
            calibration, mean=np.zeros(projected.shape[1], np.float32),
            components=np.eye(projected.shape[1], dtype=np.float32))
        names = ["probability margin"]
        if self.options.calls_unknown:
            names.append("unknown score to threshold")
        if self.options.min_confidence > 0:
            names.append("confidence to min_confidence")
        if self.options.max_distance is not None:
            names.append("distance to max_distance")
        self.components = tuple(names)

    n_genes = None
    """Per query cell, the genes its sentence names (:func:`~.head_transfer.sentence_genes`)."""

    def __call__(self, embeddings: np.ndarray, cells=None):
        return _call(self, embeddings, cells)

    def label(self, emb: np.ndarray, cells: np.ndarray, inv: np.ndarray):
        """Labels and components of ``cells`` whose sentence vectors are ``emb[inv]``."""
        from .surrogate_check import margins
        from .transfer import cosine_knn

        rows = emb
        emb_p = self.heads.embedding_proba(emb)[inv] if len(rows) else None
        expr_p = None if self._expr_p is None else self._expr_p[cells]
        n_genes = None if self.n_genes is None else self.n_genes[cells]
        proba = self.heads.combine(emb_p, expr_p, n_genes) if emb_p is not None else np.zeros((0, len(self.categories)))
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
        labels = self.categories[best].astype(object)
        comps = [margins(proba)]
        opts = self.options
        if opts.calls_unknown:
            pred = labels.copy()
            score = self._cal.scores(self._z[cells], emb, pred, inv=inv) if len(cells) else np.zeros(0)
            if self.cluster_evidence is not None:
                score = self.cluster_evidence.combine(score, cells)
            score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
            thr = 1.0 - float(opts.unknown_alpha)
            unknown = score > thr
            comps.append(np.abs(score - thr))
        else:
            unknown = np.zeros(len(cells), dtype=bool)
        unassigned = np.zeros(len(cells), dtype=bool)
        if opts.min_confidence > 0:
            conf = proba[np.arange(len(proba)), best].astype(np.float32) if len(proba) else np.zeros(0)
            unassigned |= conf < opts.min_confidence
            comps.append(np.abs(conf - opts.min_confidence))
        if opts.max_distance is not None:
            if len(rows):
                _, sim = cosine_knn(emb, self._ref, 1)
                dist = np.clip(1.0 - sim[:, 0], 0.0, 2.0).astype(np.float32)[inv]
            else:
                dist = np.zeros(0)
            unassigned |= dist > opts.max_distance
            comps.append(np.abs(dist - opts.max_distance))
        labels[unknown & ~unassigned] = UNKNOWN
        labels[unassigned] = UNASSIGNED
        return labels, np.column_stack(comps) if len(cells) else np.zeros((0, len(comps)))


class ClusterEvidence:
    """The cluster evidence of the unknown score for one query and reference, computed once
    (:func:`~.unknown.with_cluster_evidence`) and applied to any per-cell score: the surrogate
    check's label function and the transfer itself (``iter_head_transfer(..., cluster_evidence=)``)
    share it.

    ``extra``: the table columns (``cluster_novelty``, ``cluster_residual``, ``query_cluster``;
    empty where the query has no cluster evidence); ``novelty`` / ``ratio``: per cell (``ratio``
    None under the absolute call)."""

    def __init__(self, query, reference, detection: bool = False, coclustering: bool = DEFAULT_UNKNOWN_COCLUSTERING):
        from .cluster_evidence import CLUSTER_NOVELTY, CLUSTER_RESIDUAL, DETECTION_RATIO
        from .co_clustering import JOINT_ENRICHMENT
        from .unknown import with_cluster_evidence

        _, self.extra = with_cluster_evidence(np.zeros(query.counts.shape[0], np.float32), query, reference,
                                              detection=detection, coclustering=coclustering)
        self.novelty = self.extra.get(CLUSTER_NOVELTY)
        ratio = self.extra.get(CLUSTER_RESIDUAL)
        self.ratio = None if ratio is None or np.isnan(ratio).all() else ratio  # all NaN: the absolute call
        if self.ratio is not None and DETECTION_RATIO in self.extra:  # the relative call: either ratio counts
            self.ratio = np.fmax(self.ratio, self.extra[DETECTION_RATIO])
        self.joint = self.extra.get(JOINT_ENRICHMENT) if self.ratio is not None else None  # relative call only

    def combine(self, score: np.ndarray, cells=None) -> np.ndarray:
        """``score`` (of ``cells``, None: all) combined with the cells' cluster evidence."""
        if self.novelty is None:
            return score
        from .unknown import combine_cluster_evidence

        cells = slice(None) if cells is None else cells
        return combine_cluster_evidence(score, self.novelty[cells], None if self.ratio is None else self.ratio[cells],
                                        joint=None if self.joint is None else self.joint[cells])

    def apply(self, score: np.ndarray) -> tuple[np.ndarray, dict]:
        """``(combined score, extra columns)`` for all cells, as ``with_cluster_evidence`` returns them."""
        return self.combine(score), dict(self.extra)


def query_clusters(query_counts, clusters=None):
    """The query clusters the unknown score's cluster evidence uses (as
    :func:`~.unknown.with_cluster_evidence` would pick them): ``clusters`` where given, else
    Leiden on the expression (None for fewer than ``MIN_LEIDEN_CELLS`` cells)."""
    from .unknown import MIN_LEIDEN_CELLS

    if clusters is not None:
        return np.asarray(clusters, dtype=object)
    if query_counts.shape[0] < MIN_LEIDEN_CELLS:
        return None
    from .fit_report import leiden_clusters

    return np.asarray(leiden_clusters(query_counts), dtype=object)


def head_label_function(query, reference, options, heads) -> HeadLabelFunction:
    """The label function of ``options.method`` (``head``/``ensemble``) with fitted ``heads``.

    ``query``: :class:`~.head_transfer.CellSet` with the shared-panel counts, ``sentence_codes``
    and the ``clusters`` the transfer will use (see :func:`query_clusters`); ``reference``: its
    exact embeddings, counts and labels.
    """
    from .chunked_scores import projected_expression
    from .classify import expression_features
    from .head_transfer import sentence_genes
    from .unknown import fit_unknown

    expr_p = None
    if heads.expression_head is not None:
        expr_p = heads.expression_proba(query.counts)
    cal = projected = evidence = None
    if options.calls_unknown:
        cal = fit_unknown(expression_features(reference.counts), reference.embeddings, reference.labels,
                          k=options.unknown_neighbors)
        projected = projected_expression(cal, query.counts)  # in blocks of cells: bounded memory
        if options.unknown_clusters:
            evidence = ClusterEvidence(query, reference, options.unknown_detection, options.unknown_coclustering)
    fn = HeadLabelFunction(heads, cal, query.sentence_codes, expression_proba=expr_p, projected=projected,
                           cluster_evidence=evidence, options=options,
                           reference_embeddings=reference.embeddings)
    fn.n_genes = sentence_genes(query, options)  # the ensemble's per-cell weights (core/classify.py)
    return fn


__all__ = ["ClusterEvidence", "HeadLabelFunction", "KnnLabelFunction", "head_label_function", "query_clusters"]
