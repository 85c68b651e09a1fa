"""Unknown scores: does a query cell look like the reference cells of the type it was given?

A classifier always names one of the reference's types, often with a high probability even
for a cell of a type the reference lacks (NK cells become CD8 T when NK is left out: the
probability ranks "type missing" with an AUROC of 0.2-0.3 there), and the distance to the single
nearest reference cell is ordinary for such cells. The score here measures the distance to the
*predicted type* against that type's own spread, type by type, in two spaces:

* expression: the reference's log-normalised, standardised expression on its first 30
  principal components (the query is standardised with its own gene means and deviations, see
  :func:`~.classify.expression_features`, and projected on the same axes), cosine distance;
* sentence embeddings, cosine distance.

In each space, every reference cell of type ``t`` is held out in turn and its mean distance to
its ``k`` nearest other cells of ``t`` is recorded (the calibration set); a query cell predicted
``t`` gets its mean distance to its ``k`` nearest reference cells of ``t`` and the conformal
score ``#(held-out distances < its distance) / (n_t + 1)`` (about uniform on 0..1 for cells of
``t``, near 1 for cells unlike ``t``). ``unknown_score`` is the mean of the two spaces' scores.

With the head methods the per-cell score is, by default, combined with the cell's query
cluster's evidence (:func:`with_cluster_evidence`, :mod:`.cluster_evidence`): a cluster that
the reference types explain far worse than the query's typical cluster (query-relative, so a
donor or protocol shift cancels) makes its atypical cells Unknown: by its mean profile (the
profile residual) or, opt-in, by which genes its cells detect (the detection deviance against the
cluster's reference-type mix, :func:`~.cluster_evidence.cluster_detection`; NK cells called CD8 T
on a 150-gene panel lack CD3E); and (by default since the eighth session) a cell whose cluster in a
joint clustering of the reference and the query holds far fewer reference cells than chance allows
(:mod:`.co_clustering`).

A cell is ``Unknown`` when its score exceeds ``1 - alpha`` (default 0.05). The threshold is
applied by :func:`apply_unknown`, so it can be moved afterwards without re-running anything.
Measured by benchmarks 3 and 4 of ``benchmarks/quality_transfer.py``: docs/quality.md (acceptance
table) and ``_transfer_defaults.DEFAULT_UNKNOWN_COCLUSTERING`` hold the figures at the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_OUTLIER_RATIO,
    DEFAULT_UNKNOWN_ALPHA,
    DEFAULT_UNKNOWN_DETECTION,
    DEFAULT_UNKNOWN_NEIGHBORS,
    DISTANCE,
    REASON_FAR,
    REASON_LOW_CONFIDENCE,
    REASON_NO_GENES,
    REASON_UNKNOWN,
    RELATIVE_MAX_BASELINE,
    RELATIVE_MIN_GENES_PER_TYPE,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
    UNKNOWN_CELL_MARGIN,
    UNKNOWN_SCORE,
)
from .._transfer_defaults import DEFAULT_UNKNOWN_COCLUSTERING, UNKNOWN_JOINT_CELL_MARGIN

MIN_LEIDEN_CELLS = 50
"""Queries with fewer cells (and no given clusters) get no cluster evidence."""

QUERY_CLUSTER = "query_cluster"
"""Table column: the query cluster whose novelty entered a cell's unknown score."""

CALL_RELATIVE = "relative"
CALL_ABSOLUTE = "absolute"
CALL_CELL_ONLY = "cell only"
"""How the unknown score used cluster evidence (the start of the ``unknown_call`` column): the
query-relative residual ratio, the absolute score (mean with the cluster's novelty), or none."""

DEFAULT_UNKNOWN_PCS = 30
"""Principal components of the reference's expression in which the unknown score is measured."""

_MIN_DEVIANCE = 0.1
"""Floor of the query's typical cluster's detection deviance (excess deviance per cell)."""
_BLOCK = 4096
_MIN_BASELINE = 0.05
"""Floor of the query's typical cluster residual (a query whose clusters the reference explains
almost exactly would otherwise make every small residual an outlier)."""


@dataclass
class TypeDistances:
    """Per reference type: its cells (unit rows) and their held-out distances (sorted)."""

    cells: dict
    held_out: dict
    k: int

    def scores(self, z: np.ndarray, predicted, inv=None, normalise: bool = False) -> np.ndarray:
        """Conformal score of each cell for its ``predicted`` type (NaN: not a type). Cell ``i`` has
        the unit row ``z[i]``, or ``z[inv[i]]`` with ``inv`` (rows shared by cells: one per distinct
        sentence); ``normalise``: rows scaled to unit length here, block by block (no per-cell copy)."""
        from .transfer import l2_normalise

        predicted = np.asarray(predicted, dtype=object)
        out = np.full(len(predicted), np.nan, dtype=np.float32)
        for t, ref in self.cells.items():
            rows = np.flatnonzero(predicted == t)
            cal = self.held_out[t]
            if not len(rows):
                continue
            d = []
            for s in range(0, len(rows), _BLOCK):
                block = rows[s:s + _BLOCK]
                q = z[block] if inv is None else z[inv[block]]
                d.append(_mean_knn_distance(l2_normalise(q) if normalise else q, ref, self.k))
            out[rows] = np.searchsorted(cal, np.concatenate(d), side="left") / (len(cal) + 1.0)
        return out


def fit_type_distances(z: np.ndarray, labels, k: int = DEFAULT_UNKNOWN_NEIGHBORS) -> TypeDistances:
    """Calibrate on reference rows ``z`` (unit length): each cell held out from its own type."""
    y = np.asarray(labels).astype(str)
    out = TypeDistances({}, {}, int(k))
    for t in np.unique(y):
        ref = np.ascontiguousarray(z[y == t], dtype=np.float32)
        out.cells[t] = ref
        if len(ref) < 2:  # one cell: nothing to hold out; any other cell is unlike it
            out.held_out[t] = np.zeros(1, dtype=np.float32)
            continue
        held = np.concatenate([_mean_knn_distance(ref[s:s + _BLOCK], ref, k, skip_self=True)
                               for s in range(0, len(ref), _BLOCK)])
        out.held_out[t] = np.sort(held)
    return out


@dataclass
class UnknownCalibration:
    """The two calibrated spaces of the unknown score: expression PCs and sentence embeddings."""

    mean: np.ndarray
    components: np.ndarray
    expression: TypeDistances
    embedding: TypeDistances

    def project(self, features: np.ndarray) -> np.ndarray:
        """Standardised expression -> unit vectors in the reference's PC space."""
        from .transfer import l2_normalise

        return l2_normalise((np.asarray(features, dtype=np.float32) - self.mean) @ self.components.T)

    def scores(self, features: np.ndarray, embeddings: np.ndarray, predicted, inv=None) -> np.ndarray:
        """Mean of the expression and the embedding conformal scores of each query cell (``inv``:
        cell ``i``'s embedding is ``embeddings[inv[i]]``, see :meth:`TypeDistances.scores`)."""
        a = self.expression.scores(self.project(features), predicted)
        b = self.embedding.scores(embeddings, predicted, inv=inv, normalise=True)
        return ((a + b) / 2).astype(np.float32)


def _mean_knn_distance(q: np.ndarray, ref: np.ndarray, k: int, skip_self: bool = False) -> np.ndarray:
    """Mean cosine distance of each row of ``q`` to its ``k`` nearest rows of ``ref``."""
    sim = q @ ref.T
    kk = min(k + int(skip_self), sim.shape[1])
    top = -np.partition(-sim, kk - 1, axis=1)[:, :kk] if kk < sim.shape[1] else sim
    top = np.sort(top, axis=1)[:, ::-1]
    if skip_self:
        top = top[:, 1:]
    if top.shape[1] == 0:
        return np.zeros(len(q), dtype=np.float32)
    return (1.0 - top.mean(axis=1)).astype(np.float32)


def fit_unknown(features: np.ndarray, embeddings: np.ndarray, labels, *,
                k: int = DEFAULT_UNKNOWN_NEIGHBORS) -> UnknownCalibration:
    """Calibrate the unknown score on reference cells (``features``: standardised expression,
    ``embeddings``: their sentence embeddings)."""
    from sklearn.decomposition import PCA

    from .transfer import l2_normalise

    x = np.asarray(features, dtype=np.float32)
    n_pcs = max(1, min(DEFAULT_UNKNOWN_PCS, x.shape[1], x.shape[0] - 1))
    pca = PCA(n_components=n_pcs, svd_solver="full", random_state=0).fit(x)
    mean, comp = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
    cal = UnknownCalibration(mean, comp, None, None)
    cal.expression = fit_type_distances(cal.project(x), labels, k)
    cal.embedding = fit_type_distances(l2_normalise(embeddings), labels, k)
    return cal


def apply_unknown(table: pd.DataFrame, alpha: float | None = DEFAULT_UNKNOWN_ALPHA, *,
                  min_confidence: float = 0.0, max_distance: float | None = None) -> pd.DataFrame:
    """Set ``cell_type`` and ``unassigned_reason`` of a transfer table from its scores, in place.

    ``alpha``: cells whose ``unknown_score`` exceeds ``1 - alpha`` become ``Unknown`` (None: no
    Unknown call); cells below ``min_confidence`` or beyond ``max_distance`` become
    ``Unassigned`` (before the Unknown call: a threshold always wins); cells without any shared
    gene stay ``Unassigned`` whatever the thresholds.
    Returns the table. Moving a threshold afterwards is one call, nothing is re-computed.
    """
    reason = table[UNASSIGNED_REASON].astype(object).to_numpy() if UNASSIGNED_REASON in table else \
        np.full(len(table), "", dtype=object)
    no_genes = reason == REASON_NO_GENES
    label = table[TRANSFERRED_TYPE].astype(object).to_numpy().copy()
    new_reason = np.full(len(table), "", dtype=object)
    conf = table[CONFIDENCE].to_numpy()
    low = conf < min_confidence
    far = table[DISTANCE].to_numpy() > max_distance if max_distance is not None else np.zeros(len(table), bool)
    unknown = np.zeros(len(table), dtype=bool)
    if alpha is not None and UNKNOWN_SCORE in table:
        score = table[UNKNOWN_SCORE].to_numpy(dtype=np.float64)
        unknown = np.nan_to_num(score, nan=0.0) > 1.0 - float(alpha)
    unknown &= ~(low | far)  # a cell below the thresholds is Unassigned, whatever its score
    new_reason[far] = REASON_FAR
    new_reason[low] = REASON_LOW_CONFIDENCE
    label[low | far] = UNASSIGNED
    new_reason[unknown] = REASON_UNKNOWN
    label[unknown] = UNKNOWN
    label[no_genes] = UNASSIGNED
    new_reason[no_genes] = REASON_NO_GENES
    table[CELL_TYPE] = label
    table[UNASSIGNED_REASON] = new_reason
    return table


def unknown_scores(query, reference, predicted, *, k: int = DEFAULT_UNKNOWN_NEIGHBORS) -> np.ndarray:
    """Unknown score of each query cell for its ``predicted`` type; ``query`` and ``reference``
    are :class:`~.head_transfer.CellSet` s (shared-panel counts, embeddings; reference labels)."""
    from .chunked_scores import cell_unknown_scores  # cal.scores in blocks of cells (bounded memory)
    from .classify import expression_features

    cal = fit_unknown(expression_features(reference.counts), reference.embeddings, reference.labels, k=k)
    return cell_unknown_scores(cal, query, predicted)


def with_cluster_evidence(score: np.ndarray, query, reference, *, outlier_ratio: float = DEFAULT_OUTLIER_RATIO,
                          detection: bool = DEFAULT_UNKNOWN_DETECTION,
                          coclustering: bool = DEFAULT_UNKNOWN_COCLUSTERING) -> tuple[np.ndarray, dict]:
    """Combine each cell's own ``score`` with its query cluster's evidence (:mod:`.cluster_evidence`).

    ``query.clusters`` (None: Leiden on ``query.counts``) and ``reference`` are
    :class:`~.head_transfer.CellSet` s on the shared panel.

    **Query-relative call** (default): each cluster's profile residual against the reference
    types (:func:`~.cluster_evidence.cluster_residual`) is divided by the query's typical
    cluster's (the cell-weighted median), so a shift that moves every cluster - another donor,
    protocol or depth - cancels, while a cluster that the reference explains far worse than the
    rest of the query stands out. The ratio ``rho`` gives the cluster score
    ``1 - rho ** -(ln 20 / ln outlier_ratio)`` (0.95, the default level, at ``outlier_ratio``),
    and a cell's unknown score is the smaller of that and its own score plus
    ``UNKNOWN_CELL_MARGIN``: Unknown needs an outlying cluster *and* a cell that is itself
    atypical of its predicted type. With ``detection`` (``TransferOptions.unknown_detection``, off
    by default) a cluster's ratio is the larger of that and its detection-deviance ratio
    (:func:`detection_evidence`; column ``detection_ratio``). With ``coclustering``
    (``TransferOptions.unknown_coclustering``, on by default since the eighth session) the reference and the query are
    also clustered together (:mod:`.co_clustering`): a joint cluster with far fewer reference cells
    than both the typical share and the share its reference cells' types predict (``reference.labels``)
    scores ``1 - p`` (binomials, Bonferroni; column ``joint_enrichment``),
    capped by the cell's own score plus ``UNKNOWN_JOINT_CELL_MARGIN``; a cell's unknown score is the
    larger of that and the residual's.

    **Absolute call** (the mean of the cell's score and its cluster's novelty, ``1 - best marker
    match``) where no shift can be measured: the query's typical cluster's residual above
    ``RELATIVE_MAX_BASELINE`` (another tissue or platform: the reference explains no part of the
    query well) or fewer than ``RELATIVE_MIN_GENES_PER_TYPE`` profile genes per reference type.

    Returns the combined score and the extra table columns (``cluster_novelty``,
    ``cluster_residual`` - the ratio ``rho``, NaN under the absolute call -, ``profile_residual``
    - the cluster's residual itself -, ``unknown_call`` - which call was made and, for the
    absolute one, why - and ``query_cluster``); cells without a cluster keep their own score. A
    query of fewer than ``MIN_LEIDEN_CELLS`` cells without given clusters, or with a single
    cluster, keeps the per-cell scores (only ``unknown_call``, ``cell only: <why>``).
    """
    from .cluster_evidence import (
        CLUSTER_NOVELTY,
        CLUSTER_RESIDUAL,
        DETECTION_RATIO,
        PROFILE_RESIDUAL,
        UNKNOWN_CALL,
        cluster_novelty,
    )
    from .co_clustering import JOINT_ENRICHMENT, joint_enrichment
    from .fit_report import leiden_clusters

    def cell_only(why: str) -> dict:
        return {UNKNOWN_CALL: call_column(len(score), f"{CALL_CELL_ONLY}: {why}")}

    clusters = query.clusters
    if clusters is None:
        if query.counts.shape[0] < MIN_LEIDEN_CELLS:  # too few cells to cluster: the cells' own scores
            return score, cell_only(f"a query of fewer than {MIN_LEIDEN_CELLS} cells and no clusters given")
        clusters = np.asarray(leiden_clusters(query.counts), dtype=object)
    clusters = np.asarray(clusters, dtype=object)
    has = pd.notna(clusters)
    if len(pd.unique(clusters[has])) < 2:  # one cluster has no rest of the query to contrast with
        return score, cell_only("a single query cluster (nothing to compare it with)")
    novelty = np.full(len(clusters), np.nan, dtype=np.float32)
    ratio = np.full(len(clusters), np.nan, dtype=np.float32)
    det_ratio = np.full(len(clusters), np.nan, dtype=np.float32)
    residual = np.full(len(clusters), np.nan, dtype=np.float32)
    joint = np.full(len(clusters), np.nan, dtype=np.float32)
    call = f"{CALL_ABSOLUTE}: no cell with a cluster"
    relative = False
    if has.any():
        counts, cl = _rows(query.counts, has), clusters[has]
        ref = (reference.counts, reference.labels)
        novelty[has] = cluster_novelty(counts, cl, ref)
        ev = residual_evidence(counts, cl, ref)
        residual[has] = ev.residual
        call = ev.call
        if ev.ratio is not None:
            ratio[has] = ev.ratio
            relative = True
            if detection:
                det_ratio[has] = detection_evidence(counts, cl, ref)
                call = call.replace(" at the default level", " (of the residual or of the detection deviance, "
                                    "detection_ratio) at the default level")
            if coclustering:
                joint = joint_enrichment(query.counts, reference.counts, query_clusters=clusters,
                                         reference_labels=reference.labels)
                call += "; or a joint reference + query cluster short of reference cells (joint_enrichment >= 0.95)"
    outlying = (np.fmax(ratio, det_ratio) if detection else ratio) if relative else None
    combined = combine_cluster_evidence(score, novelty, outlying, outlier_ratio=outlier_ratio,
                                        joint=joint if relative and coclustering else None)
    extra = {CLUSTER_NOVELTY: novelty, CLUSTER_RESIDUAL: ratio}
    if detection:
        extra[DETECTION_RATIO] = det_ratio
    if coclustering:
        extra[JOINT_ENRICHMENT] = joint
    extra.update({PROFILE_RESIDUAL: residual, UNKNOWN_CALL: call_column(len(score), call),
                  QUERY_CLUSTER: np.where(has, clusters, "").astype(str)})
    return combined, extra


def detection_evidence(counts, clusters, reference) -> np.ndarray:
    """Per cell: its cluster's detection deviance (:func:`~.cluster_evidence.cluster_detection`)
    over the query's typical cluster's (cell-weighted median; floor ``_MIN_DEVIANCE``)."""
    from .cluster_evidence import cluster_detection

    d = cluster_detection(counts, clusters, reference)
    ok = d["deviance"].notna().to_numpy()
    per_cell = pd.Series(d["deviance"].to_numpy(), index=d["cluster"].to_numpy()).reindex(
        np.asarray(clusters, dtype=object)).to_numpy(dtype=np.float64)
    if not ok.any():
        return np.full(len(per_cell), np.nan, dtype=np.float32)
    v, w = d["deviance"].to_numpy()[ok], d["n_cells"].to_numpy(dtype=float)[ok]
    order = np.argsort(v, kind="stable")
    typical = float(v[order][np.searchsorted(np.cumsum(w[order]) / w.sum(), 0.5)])
    return (per_cell / max(typical, _MIN_DEVIANCE)).astype(np.float32)


def call_column(n: int, value: str) -> pd.Categorical:
    """A per-cell column holding one value (stored once)."""
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value])


def combine_cluster_evidence(score, novelty, ratio=None, *, outlier_ratio: float = DEFAULT_OUTLIER_RATIO,
                             joint=None):
    """Per cell: its own unknown ``score`` combined with its cluster's evidence, the rule of
    :func:`with_cluster_evidence` (``ratio`` None: the absolute call, mean with ``novelty``;
    else the query-relative call; ``joint``: the co-clustering scores, used only with ``ratio``).
    Cells with NaN ``novelty`` (no cluster) keep their score."""
    own = np.asarray(score, dtype=np.float32)
    combined = own.copy()
    has = ~np.isnan(np.asarray(novelty, dtype=np.float64))
    if ratio is None:
        combined[has] = (combined[has] + np.asarray(novelty)[has]) / 2
    else:
        k = np.log(20.0) / np.log(max(float(outlier_ratio), 1.0 + 1e-6))
        cluster_score = 1.0 - np.maximum(np.nan_to_num(np.asarray(ratio)[has], nan=1.0), 1.0) ** -k
        combined[has] = np.minimum(cluster_score, np.minimum(combined[has] + UNKNOWN_CELL_MARGIN, 1.0))
        if joint is not None:
            j = np.nan_to_num(np.asarray(joint, dtype=np.float32), nan=0.0)
            capped = np.minimum(j, np.minimum(own + UNKNOWN_JOINT_CELL_MARGIN, 1.0))
            combined[has] = np.maximum(combined[has], capped[has])
    return combined.astype(np.float32)


@dataclass
class ResidualEvidence:
    """The profile residuals of a query's clusters and the call they support (per cell)."""

    residual: np.ndarray
    """Each cell's cluster's profile residual (:func:`~.cluster_evidence.cluster_residual`)."""
    ratio: np.ndarray | None
    """residual / the typical cluster's; None where no shift can be measured (absolute call)."""
    call: str
    """``relative: ...`` or ``absolute: <why>`` (the table's ``unknown_call``)."""


def residual_evidence(counts, clusters, reference) -> ResidualEvidence:
    """Per cell: its cluster's residual and its ratio to the query's typical cluster's (NaN: a
    cluster without counts on the profile genes); the ratio is None, and ``call`` says why, where
    no shift can be measured (see :func:`with_cluster_evidence`)."""
    from .cluster_evidence import cluster_residual

    res = cluster_residual(counts, clusters, reference)
    per_cell = pd.Series(res["residual"].to_numpy(), index=res["cluster"].to_numpy()).reindex(
        np.asarray(clusters, dtype=object)).to_numpy(dtype=np.float64)
    n_types = len(pd.unique(np.asarray(reference[1]).astype(str)))
    ok = res["residual"].notna().to_numpy()
    n_genes = int(res.attrs["n_genes"])
    if n_genes < RELATIVE_MIN_GENES_PER_TYPE * n_types:
        return ResidualEvidence(per_cell, None, (
            f"{CALL_ABSOLUTE}: {n_genes} profile genes for {n_types} types, < {RELATIVE_MIN_GENES_PER_TYPE} per type "
            "(RELATIVE_MIN_GENES_PER_TYPE) - cluster profiles too alike to compare"))
    if not ok.any():
        return ResidualEvidence(per_cell, None, f"{CALL_ABSOLUTE}: no cluster has counts on the profile genes")
    r, w = res["residual"].to_numpy()[ok], res["n_cells"].to_numpy(dtype=float)[ok]
    order = np.argsort(r, kind="stable")
    baseline = float(r[order][np.searchsorted(np.cumsum(w[order]) / w.sum(), 0.5)])
    if baseline > RELATIVE_MAX_BASELINE:
        return ResidualEvidence(per_cell, None, (
            f"{CALL_ABSOLUTE}: typical cluster residual {baseline:.2f} > {RELATIVE_MAX_BASELINE:g} "
            "(RELATIVE_MAX_BASELINE) - the reference explains no ordinary part of the query, so there is no "
            "shift to measure against"))
    floor = max(baseline, _MIN_BASELINE)
    return ResidualEvidence(per_cell, per_cell / floor, (
        f"{CALL_RELATIVE}: residual / typical cluster's ({baseline:.2f}"
        + (f", floor {_MIN_BASELINE:g}" if baseline < _MIN_BASELINE else "")
        + f") - Unknown from a ratio of {DEFAULT_OUTLIER_RATIO:g} at the default level"))


def _rows(x, mask):
    return x[np.flatnonzero(mask)] if sp.issparse(x) else np.asarray(x)[mask]


def add_unknown_score(table: pd.DataFrame, query, reference, *, options=None) -> None:
    """Add ``unknown_score`` and ``unassigned_reason`` to a kNN table, in place, without
    changing a label (the ``knn`` method keeps the paper's labels; :func:`apply_unknown` can
    turn the score into Unknown calls afterwards)."""
    k = DEFAULT_UNKNOWN_NEIGHBORS if options is None else options.unknown_neighbors
    table[UNKNOWN_SCORE] = unknown_scores(query, reference, table[TRANSFERRED_TYPE].to_numpy(), k=k)
    if options is None:
        apply_unknown(table, None)
    else:
        apply_unknown(table, None, min_confidence=options.min_confidence, max_distance=options.max_distance)
