"""Transfer methods, the Unknown call and the fit report: names and defaults (issue 14).

Re-exported by :mod:`napari_cellama._constants`, where every module imports them from.
"""

from __future__ import annotations

METHOD_KNN = "knn"
METHOD_HEAD = "head"
METHOD_ENSEMBLE = "ensemble"
TRANSFER_METHODS = (METHOD_ENSEMBLE, METHOD_HEAD, METHOD_KNN)
"""``ensemble``: average of a logistic-regression head on the sentence embeddings and a logistic
regression on the shared panel's expression; ``head``: the embedding head alone; ``knn``: the
paper's cosine kNN vote (labels exactly as before issue 14)."""

DEFAULT_TRANSFER_METHOD = METHOD_ENSEMBLE
"""Chosen by ``benchmarks/quality_transfer.py`` (docs/quality.md)."""

DEFAULT_HEAD_C = 100.0
"""Inverse L2 penalty of the logistic-regression head on the (unit-length) sentence embeddings:
sentence embeddings of different cells differ little, so the head needs a weak penalty."""

DEFAULT_EXPRESSION_C = 1.0
"""Inverse L2 penalty of the logistic regression on log-normalised expression."""

DEFAULT_BALANCED_CLASSES = True
"""Weigh reference cells inversely to their type's size when fitting the embedding head, so that
a rare type (dendritic cells, platelets) is not ignored."""

DEFAULT_EXPRESSION_WEIGHT = 0.6
"""Weight of the expression model in the ensemble's averaged probabilities."""

DEFAULT_SENTENCE_FULL_GENES = 3
"""Ensemble: a cell whose sentence names this many genes or more gives the embedding head its full
weight (``1 - DEFAULT_EXPRESSION_WEIGHT``); one gene gives it none, linear in between
(core/classify.py ``embedding_weights``; docs/quality.md)."""

DEFAULT_UNKNOWN_ALPHA = 0.05
"""Level of the Unknown call: a cell is ``Unknown`` when its ``unknown_score`` (the mean of two
per-type conformal scores, core/unknown.py, combined with its query cluster's evidence,
core/cluster_evidence.py) exceeds ``1 - alpha``. Chosen on benchmarks 1-4 of
benchmarks/quality_transfer.py: 0.3 calls a pbmc68k plasma-cell cluster Unknown across donors
(docs/quality.md)."""

DEFAULT_UNKNOWN_NEIGHBORS = 10
"""Reference cells of the predicted type whose mean distance makes the unknown score."""

DEFAULT_UNKNOWN_CLUSTERS = True
"""Whether the unknown score includes the cell's query cluster's evidence (core/cluster_evidence.py)."""

DEFAULT_OUTLIER_RATIO = 3.5
"""Query-relative Unknown call (core/unknown.py): a query cluster whose profile residual is this
many times the query's typical cluster's reaches the default level (alpha 0.05); the level maps
to the ratio as ``1 - ratio ** -(ln 20 / ln DEFAULT_OUTLIER_RATIO)``. Chosen on benchmarks 1-4
(docs/quality.md): 3.0 called 2.8% of an all-present 458-gene query Unknown."""

UNKNOWN_CELL_MARGIN = 0.45
"""Query-relative Unknown call: a cell's own score plus this margin caps its unknown score, so a
cell closer to its predicted type than about half of that type's reference cells (own score
below 0.5) is not Unknown at the default level, whatever its cluster."""

RELATIVE_MAX_BASELINE = 0.5
"""Query-relative Unknown call: when the query's typical cluster's residual exceeds this (the
reference explains even the query's ordinary clusters poorly: another tissue or platform, a tiny
panel), there is no well-matched part of the query to measure a shift against, and the unknown
score is the earlier absolute one (mean of the cell's score and its cluster's novelty). Sixth
session: 0.7 was measured together with the co-clustering evidence and went back to 0.5 with it at
the merge; seventh session: 0.7 with the composition-robust co-clustering test gained nothing (145
genes AUROC 0.768 against 0.772; docs/quality.md). 0.7 is the middle of the measured gap between
same-tissue queries (pbmc3k halves: 458 genes 0.10-0.12, 145 / 143 / 146-gene panels 0.23-0.51 - two seed-0 cases at 0.507 fell to the
absolute call) and another tissue (the bone-marrow section with pbmc3k, 0.87; the 29-gene panel of
seed 0 0.87-0.97, the 28-gene ones of seeds 1 / 2 0.21-1.0 / 0.41-0.48, all three also below
``RELATIVE_MIN_GENES_PER_TYPE``); docs/quality.md."""

RELATIVE_MIN_GENES_PER_TYPE = 5
"""Query-relative Unknown call: fewer marker genes than this per reference type (a 30-gene panel,
47 genes for 10 types) make cluster profiles too alike to compare; the absolute score is used."""

DEFAULT_NOVEL_CLUSTER = 0.99
"""Fit report: a cluster whose mean ``cluster_novelty`` reaches this (its markers correlate with no
reference type's: match <= 0.01) is listed as possibly missing, whatever its share of Unknown."""

DEFAULT_UNKNOWN_COCLUSTERING = True
"""Query-relative Unknown call: also test each query cell's cluster in a Leiden clustering of the
reference and the query together (core/co_clustering.py): a cluster with far fewer reference cells
than both the typical share and the share its own reference cells' types predict (one-sided
binomials, Bonferroni over the clusters, score ``1 - p``) is a type the reference lacks.
Composition-robust (seventh session): a type three times as common in the query as in a
per-type-capped reference keeps its label (the demo: accuracy 0.76, 0% Unknown), and so does one
type cut to 15 reference cells (0.0-0.4% Unknown). **On by default since the eighth session**: on
benchmark 4 the share of a left-out type's cells called Unknown goes from 82% / 5% / 0% / 0% to
91% / 39% / 39% / 67% on the 458 / 145 / 143 / 146-gene panels (present types 0.0-1.9% -> 1.4-3.1%
mean), mean AUROC 0.977 / 0.691 / 0.685 / 0.791 -> 0.979 / 0.779 / 0.745 / 0.901; benchmarks 1-3
stay above logistic regression, across donors 0.0% Unknown; the section's absolute call does not use
it (docs/quality.md, "Eighth session"). ``TransferOptions(unknown_coclustering=False)`` or
``napari-cellama transfer --no-coclustering`` switches it off."""

UNKNOWN_JOINT_CELL_MARGIN = 0.7
"""Co-clustering evidence: a cell's own score plus this margin caps its score from the joint cluster,
so the quarter of the cells most typical of their predicted type (own score below 0.25) is not
Unknown at the default level. Measured against ``UNKNOWN_CELL_MARGIN`` (0.45) and 0.6 / no cap on
benchmark 4 (docs/quality.md)."""

DEFAULT_UNKNOWN_DETECTION = False
"""Query-relative Unknown call: also count a cluster's detection-deviance ratio (core/cluster_evidence.py
``cluster_detection``) beside its profile-residual ratio. Off by default: on 145 genes it lifts the
leave-one-type-out AUROC from 0.661 to 0.847, but makes 9.3% of an all-present query Unknown (Leiden
clusters carved from the naive / memory T continuum deviate by construction; docs/quality.md)."""

DEFAULT_UNRESOLVED_LEVEL = 0.25
"""Panel resolution (core/panel_resolution.py): two reference types are reported as not told apart
by the shared panel when, in the reference's own cross-validation (the ensemble's expression
model), at least this share of one type's cells is called the other. A cell of one of them whose
type is missing from the reference is then called the other without an Unknown warning."""

DEFAULT_RESOLUTION_CELLS = 300
"""Panel resolution: reference cells per type (at most; a seeded sample) in the cross-validation."""

DEFAULT_RESOLUTION_FOLDS = 3
"""Panel resolution: cross-validation folds (types with fewer cells are not assessed)."""

UNKNOWN = "Unknown"
"""Label of cells that look like no reference type (a type the reference lacks)."""

UNKNOWN_SCORE = "unknown_score"
"""Column: 0..1, how unlike the reference cells of its predicted type a cell is (1 - conformal p)."""

UNASSIGNED_REASON = "unassigned_reason"
"""Column: why a cell has no reference label: ``no shared gene``, ``unknown type``,
``low confidence``, ``far from reference`` or empty."""

REASON_NO_GENES = "no shared gene"
REASON_UNKNOWN = "unknown type"
REASON_LOW_CONFIDENCE = "low confidence"
REASON_FAR = "far from reference"

DEFAULT_LOW_CONFIDENCE = 0.5
"""Fit report: a cell counts as low-confidence below this confidence."""

DEFAULT_FIT_REPORT_MARKERS = 5
"""Fit report: marker genes listed per query cluster."""

DEFAULT_MISSING_TYPE_SHARE = 0.5
"""Fit report: a query cluster with at least this share of Unknown cells is listed as a type
possibly missing from the reference."""

STAGE_CLASSIFY = "classifier"
STAGE_FIT_REPORT = "fit report"
