"""Summaries behind the plots panel: an embedding map, composition and contingency tables.

Qt-free; the plots widget only draws what these return.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from ._progress import run

STAGE_UMAP = "UMAP"
DEFAULT_MAX_MAP_POINTS = 20000


def iter_embedding_map(
    query_embeddings: np.ndarray,
    reference_embeddings: np.ndarray | None = None,
    *,
    max_points: int = DEFAULT_MAX_MAP_POINTS,
    seed: int = 0,
    n_neighbors: int = 15,
) -> Iterator:
    """Generator: a 2-D UMAP of query (and reference) embeddings, returning a DataFrame.

    Columns ``x``, ``y``, ``dataset`` (``query`` / ``reference``) and ``row`` (row in its
    dataset's embedding array). Above ``max_points`` cells in total, a uniform random
    subset (fixed ``seed``) keeps the map fast; every query cell still appears in the tables.
    """
    import umap

    parts = [("query", np.asarray(query_embeddings, dtype=np.float32))]
    if reference_embeddings is not None and len(reference_embeddings):
        parts.append(("reference", np.asarray(reference_embeddings, dtype=np.float32)))
    total = sum(len(e) for _, e in parts)
    rng = np.random.default_rng(seed)
    frames, blocks = [], []
    for name, emb in parts:
        take = len(emb) if total <= max_points else max(1, int(round(max_points * len(emb) / total)))
        rows = np.sort(rng.choice(len(emb), size=min(take, len(emb)), replace=False))
        frames.append(pd.DataFrame({"dataset": name, "row": rows}))
        blocks.append(emb[rows])
    x = np.concatenate(blocks)
    yield (STAGE_UMAP, 0, 1)
    n_neighbors = max(2, min(n_neighbors, len(x) - 1))
    if len(x) < 4:
        coords = np.zeros((len(x), 2), dtype=np.float32)
    else:
        coords = umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed,
                           n_jobs=1).fit_transform(x)
    yield (STAGE_UMAP, 1, 1)
    out = pd.concat(frames, ignore_index=True)
    out["x"] = coords[:, 0].astype(np.float32)
    out["y"] = coords[:, 1].astype(np.float32)
    return out


def embedding_map(query_embeddings, reference_embeddings=None, **kwargs) -> pd.DataFrame:
    """Synchronous :func:`iter_embedding_map`."""
    return run(iter_embedding_map(query_embeddings, reference_embeddings, **kwargs))


def composition(labels: pd.Series, normalize: bool = True) -> pd.Series:
    """Share (or count) of each label, largest first."""
    return labels.astype(str).value_counts(normalize=normalize)


def contingency(a: pd.Series, b: pd.Series, normalize: str | None = "index") -> pd.DataFrame:
    """Cross-table of two per-cell labelings aligned on their index.

    ``normalize="index"``: each row (a value of ``a``) sums to 1; ``None``: counts.
    Cells missing from either side are left out.
    """
    joined = pd.concat([a.rename("a").astype(str), b.rename("b").astype(str)], axis=1, join="inner").dropna()
    table = pd.crosstab(joined["a"], joined["b"])
    if normalize == "index":
        table = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    return table


def categorical_columns(obs: pd.DataFrame, max_categories: int = 100) -> list[str]:
    """Columns of ``obs`` that look like labels (categorical, string or few integers)."""
    out = []
    for col in obs.columns:
        s = obs[col]
        n = s.nunique(dropna=True)
        if n < 2 or n > max_categories:
            continue
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s):
            out.append(str(col))
        elif pd.api.types.is_integer_dtype(s) and n <= 50:
            out.append(str(col))
    return out
