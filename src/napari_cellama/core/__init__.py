"""The Qt-free CELLama engine: sentences, shared panel, embedding, transfer.

Nothing here imports Qt or napari. Every long step exists as a generator yielding
``(stage, done, total)`` (``iter_*``) and as a plain synchronous function.
"""

from ._progress import Progress, run
from .embed import Embedder, ModelNotFoundError, load_model, offline_model_path, resolve_device
from .panel import PanelReport, normalise_symbol, shared_panel
from .pipeline import TransferResult, iter_transfer, run_transfer, transfer_labels
from .sentences import (
    adata_sentences,
    cell_sentences,
    format_sentences,
    iter_cell_sentences,
    metadata_suffixes,
    top_genes,
)
from .transfer import apply_threshold, cosine_knn, iter_cosine_knn, iter_knn_transfer, knn_transfer, vote

__all__ = [
    "Embedder",
    "ModelNotFoundError",
    "PanelReport",
    "Progress",
    "TransferResult",
    "adata_sentences",
    "apply_threshold",
    "cell_sentences",
    "cosine_knn",
    "format_sentences",
    "iter_cell_sentences",
    "iter_cosine_knn",
    "iter_knn_transfer",
    "iter_transfer",
    "knn_transfer",
    "load_model",
    "metadata_suffixes",
    "normalise_symbol",
    "offline_model_path",
    "resolve_device",
    "run",
    "run_transfer",
    "shared_panel",
    "top_genes",
    "transfer_labels",
    "vote",
]
