"""The Qt-free CELLama engine: sentences, shared panel, embedding, transfer.

Nothing here imports Qt or napari. Every long step exists as a generator yielding
``(stage, done, total)`` (``iter_*``) and as a plain synchronous function.
"""

from ._progress import Progress, run
from .annotation import Annotation, Edit, palette_color, to_hex, to_rgba
from .cache import EmbeddingCache
from .embed import Embedder, ModelNotFoundError, load_model, offline_model_path, resolve_device
from .fit_report import FitReport, reference_fit_report
from .finetune import FinetuneLog, FinetuneResult, finetune, iter_finetune, read_finetune_record
from .niche import (
    NicheResult,
    SpatialNeighbors,
    cluster_embeddings,
    format_niche_sentences,
    iter_niches,
    iter_recluster,
    neighbor_composition,
    niche_markers,
    recluster,
    run_niches,
    spatial_neighbors,
)
from .panel import PanelReport, normalise_symbol, shared_panel
from .pipeline import TransferResult, iter_transfer, run_transfer, transfer_labels
from .prototypes import (
    MarkerSet,
    PrototypeResult,
    annotate_by_prototypes,
    default_markers_path,
    iter_prototype_annotation,
    marker_sentences,
    read_markers,
    restrict_markers,
)
from .sentences import (
    adata_sentences,
    cell_sentences,
    format_sentences,
    is_integer_valued,
    iter_cell_sentences,
    metadata_suffixes,
    scaled_expression,
    top_genes,
)
from .subsample import subsample_reference
from .transfer_options import TransferOptions
from .unknown import apply_unknown
from .transfer import (
    apply_threshold,
    cosine_knn,
    iter_cosine_knn,
    iter_knn_transfer,
    knn_transfer,
    vote,
)

__all__ = [
    "Annotation",
    "Edit",
    "Embedder",
    "EmbeddingCache",
    "FinetuneLog",
    "FitReport",
    "FinetuneResult",
    "MarkerSet",
    "ModelNotFoundError",
    "NicheResult",
    "PanelReport",
    "Progress",
    "PrototypeResult",
    "SpatialNeighbors",
    "TransferOptions",
    "TransferResult",
    "adata_sentences",
    "annotate_by_prototypes",
    "apply_threshold",
    "apply_unknown",
    "cell_sentences",
    "cluster_embeddings",
    "cosine_knn",
    "default_markers_path",
    "finetune",
    "format_niche_sentences",
    "format_sentences",
    "is_integer_valued",
    "iter_cell_sentences",
    "iter_cosine_knn",
    "iter_finetune",
    "iter_knn_transfer",
    "iter_niches",
    "iter_prototype_annotation",
    "iter_recluster",
    "iter_transfer",
    "knn_transfer",
    "load_model",
    "marker_sentences",
    "metadata_suffixes",
    "neighbor_composition",
    "niche_markers",
    "normalise_symbol",
    "offline_model_path",
    "palette_color",
    "read_finetune_record",
    "read_markers",
    "recluster",
    "reference_fit_report",
    "resolve_device",
    "restrict_markers",
    "run",
    "run_niches",
    "run_transfer",
    "scaled_expression",
    "shared_panel",
    "spatial_neighbors",
    "subsample_reference",
    "to_hex",
    "to_rgba",
    "top_genes",
    "transfer_labels",
    "vote",
]
