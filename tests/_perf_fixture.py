"""Shared inputs of the performance-feature tests (cache, fast mode, Dask).

pbmc68k_reduced (700 real PBMCs, ``bulk_labels``) gives one top-20 sentence per cell
(its log-normalised ``.raw``: the within-cell ranking is the one of the counts). The
stratified 50/50 split (seed 0) is the one of ``benchmarks/accuracy_pbmc.py``. The exact
float32 embeddings of all 700 sentences are computed once per test session and shared
by the test modules that need them.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

LABEL_KEY = "bulk_labels"


@lru_cache(maxsize=1)
def pbmc():
    """``(sentences, labels, ref_idx, query_idx)`` of pbmc68k_reduced (all 765 genes, top 20)."""
    import scanpy as sc
    from sklearn.model_selection import train_test_split

    from napari_cellama.core import adata_sentences
    from napari_cellama.io import expression_for_sentences

    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    sentences = adata_sentences(adata, 20)
    labels = adata.obs[LABEL_KEY].astype(str).to_numpy()
    idx = np.arange(adata.n_obs)
    ref_idx, query_idx = train_test_split(idx, test_size=0.5, random_state=0, stratify=labels)
    return sentences, labels, np.sort(ref_idx), np.sort(query_idx)


@lru_cache(maxsize=1)
def session_root() -> Path:
    """A temporary cache root (as ``$NAPARI_CELLAMA_CACHE``) shared by one test session, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="cellama-test-cache-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def session_cache() -> Path:
    """The embedding-cache folder under :func:`session_root` (what ``cache=True`` uses there)."""
    return session_root() / "embeddings"


@lru_cache(maxsize=1)
def exact_run() -> tuple[np.ndarray, dict]:
    """Exact float32 embeddings of the 700 pbmc sentences, computed once into :func:`session_cache`
    (an empty cache at that point), and the embedder's ``last_stats`` of that cold run."""
    from napari_cellama.core import Embedder

    sentences = pbmc()[0]
    emb = Embedder(mode="exact", cache=session_cache(), device="cpu")
    return emb.encode(sentences), dict(emb.last_stats)


def exact_embeddings() -> np.ndarray:
    return exact_run()[0]


def transfer(embeddings: np.ndarray, k: int | None = None) -> np.ndarray:
    """Labels transferred to the query half from the reference half (default k)."""
    from napari_cellama._constants import DEFAULT_N_NEIGHBORS
    from napari_cellama.core import knn_transfer

    _, labels, ref_idx, query_idx = pbmc()
    table = knn_transfer(embeddings[query_idx], embeddings[ref_idx], labels[ref_idx],
                         k=k or DEFAULT_N_NEIGHBORS)
    return table["cell_type"].to_numpy()
