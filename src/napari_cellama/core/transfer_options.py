"""``TransferOptions``: every setting of one label transfer, built once per front end.

The CLI builds it from its arguments (:meth:`TransferOptions.from_args`), the API takes it as
``run_transfer(..., options=TransferOptions(...))``; ``to_dict()`` is what a result records in
``TransferResult.params`` (method and parameters), so a result explains how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .._constants import (
    DEFAULT_EXPRESSION_WEIGHT,
    DEFAULT_HEAD_C,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_RANDOM_STATE,
    DEFAULT_SENTENCE_FULL_GENES,
    DEFAULT_TOP_K,
    DEFAULT_TRANSFER_METHOD,
    DEFAULT_UNKNOWN_ALPHA,
    DEFAULT_UNKNOWN_CLUSTERS,
    DEFAULT_UNKNOWN_DETECTION,
    DEFAULT_UNKNOWN_NEIGHBORS,
    METHOD_KNN,
    TRANSFER_METHODS,
)
from .._transfer_defaults import DEFAULT_UNKNOWN_COCLUSTERING
from ..validators import CellamaInputError, check_fraction, check_n_neighbors, check_positive_int, check_top_k


@dataclass(frozen=True)
class TransferOptions:
    """How labels are transferred (defaults: ``_constants.py``; measured in docs/quality.md)."""

    method: str = DEFAULT_TRANSFER_METHOD
    """``ensemble`` (default), ``head`` or ``knn`` (the paper's vote; labels exactly as before)."""
    top_k: int = DEFAULT_TOP_K
    """Genes per cell sentence."""
    k: int = DEFAULT_N_NEIGHBORS
    """Reference neighbours that vote (``knn``; 1 = the paper)."""
    metadata: tuple = field(default_factory=tuple)
    """obs columns appended to the sentences."""
    max_per_type: int | None = None
    """Reference cells kept per label (seeded subsample), None: all."""
    min_confidence: float = 0.0
    """Cells below this confidence become ``Unassigned`` (reason ``low confidence``)."""
    max_distance: float | None = None
    """Cells farther than this cosine distance from every reference cell become ``Unassigned``."""
    unknown_alpha: float | None = DEFAULT_UNKNOWN_ALPHA
    """Cells with ``unknown_score > 1 - unknown_alpha`` become ``Unknown`` (None: never; the
    ``knn`` method never calls Unknown, so that its labels stay the paper's)."""
    unknown_clusters: bool = DEFAULT_UNKNOWN_CLUSTERS
    """Add cluster-level evidence to the unknown score: whether the cell's query cluster is
    explained by the reference types far worse than the query's typical cluster
    (:func:`.unknown.with_cluster_evidence`; the Xenium run's graph clusters when given, else
    Leiden on the query's expression)."""
    unknown_detection: bool = DEFAULT_UNKNOWN_DETECTION
    """Query-relative Unknown call: a cluster is also outlying by its detection deviance against its
    reference-type mix (:func:`.cluster_evidence.cluster_detection`); off by default (docs/quality.md)."""
    unknown_coclustering: bool = DEFAULT_UNKNOWN_COCLUSTERING
    """Query-relative Unknown call: a cell whose cluster in a Leiden clustering of the reference and the
    query together holds far fewer reference cells than both the typical share and the share its
    reference cells' types predict is Unknown too (:mod:`.co_clustering`, column
    ``joint_enrichment``); on by default (eighth session; docs/quality.md, benchmark 4)."""
    unknown_neighbors: int = DEFAULT_UNKNOWN_NEIGHBORS
    """Reference cells of the predicted type averaged in the unknown score."""
    head_c: float = DEFAULT_HEAD_C
    """Inverse L2 penalty of the logistic-regression heads."""
    expression_weight: float = DEFAULT_EXPRESSION_WEIGHT
    """Weight of the expression model in the ``ensemble`` average (0..1)."""
    full_weight_genes: int = DEFAULT_SENTENCE_FULL_GENES
    """``ensemble``: a cell whose sentence names this many genes or more gives the embedding head
    its full weight (``1 - expression_weight``); one gene gives it none, linear in between."""
    seed: int = DEFAULT_RANDOM_STATE

    def __post_init__(self):
        if self.method not in TRANSFER_METHODS:
            raise CellamaInputError(
                f"unknown transfer method {self.method!r}; choose one of {', '.join(TRANSFER_METHODS)}"
            )
        check_top_k(self.top_k)
        check_n_neighbors(self.k)
        check_n_neighbors(self.unknown_neighbors)
        check_fraction(self.min_confidence, "min_confidence")
        if self.max_distance is not None:
            check_fraction(self.max_distance, "max_distance", upper=2.0)
        if self.unknown_alpha is not None:
            check_fraction(self.unknown_alpha, "unknown_alpha")
        check_fraction(self.expression_weight, "expression_weight")
        check_positive_int(self.full_weight_genes, "full_weight_genes")
        if not self.head_c > 0:
            raise CellamaInputError(f"head_c must be > 0, got {self.head_c!r}")
        object.__setattr__(self, "metadata", tuple(self.metadata or ()))

    @property
    def calls_unknown(self) -> bool:
        """Whether this transfer turns cells into ``Unknown``."""
        return self.method != METHOD_KNN and self.unknown_alpha is not None

    def replace(self, **changes) -> TransferOptions:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metadata"] = list(self.metadata)
        return d

    @classmethod
    def from_args(cls, args) -> TransferOptions:
        """From the CLI's parsed arguments (``napari-cellama transfer``)."""
        alpha = getattr(args, "unknown_alpha", DEFAULT_UNKNOWN_ALPHA)
        return cls(
            method=getattr(args, "method", DEFAULT_TRANSFER_METHOD),
            top_k=args.top_k,
            k=args.neighbors,
            metadata=tuple(args.metadata or ()),
            max_per_type=args.max_per_type,
            min_confidence=args.min_confidence,
            max_distance=args.max_distance,
            unknown_alpha=None if alpha is None or alpha <= 0 else alpha,
            unknown_clusters=not getattr(args, "no_cluster_evidence", False),
            unknown_coclustering=DEFAULT_UNKNOWN_COCLUSTERING and not getattr(args, "no_coclustering", False),
            seed=getattr(args, "seed", DEFAULT_RANDOM_STATE),
        )
