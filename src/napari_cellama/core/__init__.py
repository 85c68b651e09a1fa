"""The Qt-free CELLama engine: sentences, shared panel, embedding, transfer.

Nothing here imports Qt or napari. Every long step exists as a generator yielding
``(stage, done, total)`` (``iter_*``) and as a plain synchronous function.
"""

from ._progress import Progress, run
from .annotation import Annotation, Edit
from .cache import EmbeddingCache
from .clustering import cluster_embeddings
from .combine import combine_annotations
from .counts import is_raw_counts
from .embed import Embedder, ModelNotFoundError, load_model, offline_model_path, resolve_device
from .embedding_options import EmbeddingOptions, make_embedder
from .finetune import FinetuneLog, FinetuneResult, finetune, iter_finetune, read_finetune_record
from .fit_report import FitReport, reference_fit_report
from .markers import niche_markers
from .niche import NicheResult, format_niche_sentences, iter_niches, iter_recluster, recluster, run_niches
from .options import FinetuneOptions, KMeans, KNearest, Leiden, NicheOptions, PrototypeOptions, Radius
from .palette import palette_color, to_hex, to_rgba
from .panel import PanelReport, normalise_symbol, shared_panel
from .panel_resolution import PanelResolution, panel_resolution
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
    iter_cell_sentences,
    metadata_suffixes,
    scaled_expression,
    top_genes,
)
from .spatial import SpatialNeighbors, neighbor_composition, spatial_neighbors
from .subsample import subsample_reference
from .surrogate import SurrogateEmbedder
from .surrogate_check import SurrogateAgreementWarning
from .transfer import (
    apply_threshold,
    cosine_knn,
    iter_cosine_knn,
    iter_knn_transfer,
    knn_transfer,
    vote,
)
from .transfer_options import TransferOptions
from .unknown import apply_unknown

__all__ = [
    "Annotation",
    "Edit",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingOptions",
    "SurrogateAgreementWarning",
    "SurrogateEmbedder",
    "make_embedder",
    "FinetuneLog",
    "FinetuneOptions",
    "FitReport",
    "PanelResolution",
    "FinetuneResult",
    "KMeans",
    "KNearest",
    "Leiden",
    "MarkerSet",
    "ModelNotFoundError",
    "NicheOptions",
    "NicheResult",
    "PanelReport",
    "Progress",
    "PrototypeOptions",
    "PrototypeResult",
    "Radius",
    "SpatialNeighbors",
    "TransferOptions",
    "TransferResult",
    "adata_sentences",
    "annotate_by_prototypes",
    "apply_threshold",
    "apply_unknown",
    "cell_sentences",
    "cluster_embeddings",
    "combine_annotations",
    "cosine_knn",
    "default_markers_path",
    "finetune",
    "format_niche_sentences",
    "format_sentences",
    "is_raw_counts",
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
    "panel_resolution",
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
