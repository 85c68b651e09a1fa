"""Input checks with errors that say what to do.

Every check raises :class:`CellamaInputError` (a ``ValueError``) whose message is
one line a biologist can act on. The CLI prints that line and exits non-zero; the
widgets show it as a napari notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np


class CellamaInputError(ValueError):
    """Bad input: the message says what was wrong and what to do."""


def check_file(path: str | Path, what: str = "file", suffixes: Iterable[str] | None = None) -> Path:
    """Return ``path`` as a :class:`Path` if it exists, else raise with a clear message."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CellamaInputError(f"{what} not found: {p} (check the path)")
    if suffixes is not None and p.is_file():
        suffixes = tuple(suffixes)
        if not p.name.lower().endswith(suffixes):
            raise CellamaInputError(
                f"{what} {p} should end with {' or '.join(suffixes)}"
            )
    return p


# --------------------------------------------------------------------------- numbers
# The one set of integer / fraction / number checks; every option goes through these.


def check_int(value, what: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number ``minimum <= value [<= maximum]``; bools, NaN, infinities and text are refused."""
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    ok = ok and int(value) >= minimum and (maximum is None or int(value) <= maximum)
    if not ok:
        if maximum is not None:
            need = f"a whole number from {minimum} to {maximum}"
        elif minimum == 1:
            need = "a positive whole number"
        else:
            need = f"a whole number of at least {minimum}"
        raise CellamaInputError(f"{what} must be {need}, got {value!r}")
    return int(value)


def check_positive_int(value, what: str) -> int:
    """``value`` must be a positive whole number."""
    return check_int(value, what)


def check_fraction(value: float, name: str, upper: float = 1.0, *, low_open: bool = False,
                   high_open: bool = False) -> float:
    """A share or threshold in ``[0, upper]`` (1 for a vote share, 2 for a cosine distance);
    ``low_open`` / ``high_open`` exclude 0 / ``upper``."""
    v = _as_float(value)
    ok = np.isfinite(v) and (v > 0 if low_open else v >= 0) and (v < upper if high_open else v <= upper)
    if not ok:
        if low_open or high_open:
            span = f"in {'(' if low_open else '['}0, {upper:g}{')' if high_open else ']'}"
        else:
            span = f"between 0 and {upper:g}"
        raise CellamaInputError(f"{name} must be {span}, got {value!r}")
    return v


def check_positive_number(value, what: str) -> float:
    """A finite number > 0 (a radius, a resolution, a learning rate, a temperature)."""
    v = _as_float(value)
    if not (np.isfinite(v) and v > 0):
        raise CellamaInputError(f"{what} must be a positive number, got {value!r}")
    return v


MAX_TOP_K = 100_000
"""More genes than any panel or transcriptome has (larger values are typing errors)."""


def check_top_k(top_k: int) -> int:
    """``top_k`` must be a positive whole number (at most :data:`MAX_TOP_K`)."""
    top_k = check_int(top_k, "top-k")
    if top_k > MAX_TOP_K:
        raise CellamaInputError(f"top-k must be at most {MAX_TOP_K:,} genes per sentence, got {top_k!r}")
    return top_k


def check_n_neighbors(k: int, n_reference: int | None = None) -> int:
    """``k`` must be a positive integer; it is capped at the number of reference cells."""
    k = check_int(k, "the number of neighbours")
    if n_reference is not None:
        k = min(k, n_reference)
    return k


def check_matrix(x, name: str) -> None:
    """A cells x genes matrix with at least one cell and one gene, no negative values."""
    if x.ndim != 2:
        raise CellamaInputError(f"{name}: expected a cells x genes matrix, got {x.ndim} dimensions")
    if x.shape[0] == 0:
        raise CellamaInputError(f"{name} has no cells: the expression matrix is empty")
    if x.shape[1] == 0:
        raise CellamaInputError(f"{name} has no genes: the expression matrix is empty")
    data = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else x
    data = np.asarray(data)
    if data.size and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise CellamaInputError(f"{name} contains NaN or infinite values; fill or drop them first")
    if data.size and data.min() < 0:
        raise CellamaInputError(
            f"{name} has negative values (scaled data?); use counts or log-normalised values"
        )


def check_label_key(adata, label_key: str, name: str = "reference") -> None:
    """``label_key`` must be a column of ``adata.obs`` with at least one non-missing value."""
    if label_key not in adata.obs.columns:
        cols = [c for c in adata.obs.columns]
        hint = f"; available columns: {', '.join(map(str, cols[:20]))}" if cols else ""
        raise CellamaInputError(f"label column {label_key!r} is not in the {name}'s obs{hint}")
    if adata.obs[label_key].notna().sum() == 0:
        raise CellamaInputError(f"label column {label_key!r} of the {name} has no values")


def check_metadata(adata, columns: Iterable[str] | None, name: str) -> list[str]:
    """Every metadata column must exist in ``adata.obs``."""
    columns = list(columns or [])
    missing = [c for c in columns if c not in adata.obs.columns]
    if missing:
        raise CellamaInputError(
            f"metadata column(s) {', '.join(map(repr, missing))} not in the {name}'s obs"
        )
    return columns


def check_shared_genes(n_shared: int, n_query: int, n_reference: int) -> None:
    """The query and the reference must share at least one gene."""
    if n_shared == 0:
        raise CellamaInputError(
            f"query ({n_query} genes) and reference ({n_reference} genes) share no gene symbols; "
            "check that both use gene symbols (not Ensembl ids) of the same species"
        )


def check_unique_ids(index, name: str) -> None:
    """Cell ids must be unique so that results can be keyed by them."""
    if not index.is_unique:
        dup = index[index.duplicated()][:3].tolist()
        raise CellamaInputError(f"{name} has duplicate cell ids (e.g. {dup}); make them unique first")


# --------------------------------------------------------------------------- niches (issue 5)


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def check_neighborhood(k: int | None, radius: float | None, default_k: int) -> tuple[int | None, float | None]:
    """Exactly one of ``k`` (nearest cells) or ``radius`` (microns); neither gives ``default_k``."""
    if k is not None and radius is not None:
        raise CellamaInputError("give either a number of neighbours (--neighbors) or a radius (--radius), not both")
    if radius is not None:
        return None, check_positive_number(radius, "the neighbourhood radius")
    return check_positive_int(default_k if k is None else k, "the number of spatial neighbours"), None


def check_clustering(resolution: float | None, n_clusters: int | None, default_resolution: float) -> tuple[str, float | int]:
    """Leiden with ``resolution`` or KMeans with ``n_clusters`` (not both); returns ``(method, value)``."""
    if resolution is not None and n_clusters is not None:
        raise CellamaInputError("give either a Leiden resolution (--resolution) or a number of clusters "
                                "(--n-clusters), not both")
    from ._constants import NICHE_METHOD_KMEANS, NICHE_METHOD_LEIDEN

    if n_clusters is not None:
        return NICHE_METHOD_KMEANS, check_int(n_clusters, "the number of clusters", minimum=2)
    res = default_resolution if resolution is None else resolution
    return NICHE_METHOD_LEIDEN, check_positive_number(res, "the Leiden resolution")


def check_at_most_one(**options) -> None:
    """At most one of the named options may be set (truthy)."""
    given = [name for name, value in options.items() if value]
    if len(given) > 1:
        names = ", ".join("--" + n.replace("_", "-") for n in options)
        raise CellamaInputError(f"give at most one of {names}")


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise CellamaInputError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value


def check_spatial(adata, key: str = "spatial") -> np.ndarray:
    """Cell centroids ``adata.obsm[key]`` as a finite float64 (n, 2) array (microns)."""
    if key not in adata.obsm:
        raise CellamaInputError(
            f"the query has no obsm[{key!r}] with cell centroids; read a Xenium folder or add the "
            "centroids (microns) to obsm['spatial'] of the .h5ad"
        )
    xy = np.asarray(adata.obsm[key], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2 or xy.shape[0] != adata.n_obs:
        raise CellamaInputError(f"obsm[{key!r}] must be a cells x 2 array of centroids, got shape {xy.shape}")
    xy = xy[:, :2]
    if not np.isfinite(xy).all():
        raise CellamaInputError(f"obsm[{key!r}] has NaN or infinite centroids; drop those cells first")
    return xy


def check_niche_labels(labels, cell_ids, missing_label: str, min_fraction: float = 0.5):
    """Align per-cell labels to ``cell_ids``; return ``(labels, n_missing)``.

    ``labels`` is a Series indexed by cell id (e.g. the transfer CSV's ``cell_type``)
    or an array in the order of ``cell_ids``. Cells without a label get
    ``missing_label``; fewer than ``min_fraction`` labelled cells means the labels
    belong to another dataset and is refused.
    """
    import pandas as pd

    ids = pd.Index(cell_ids).astype(str)
    if isinstance(labels, pd.Series) and not isinstance(labels.index, pd.RangeIndex):
        s = labels.copy()
        s.index = s.index.astype(str)
        if not s.index.is_unique:
            dup = s.index[s.index.duplicated()][:3].tolist()
            raise CellamaInputError(f"the labels have duplicate cell ids (e.g. {dup}); keep one row per cell")
        n_match = int(ids.isin(s.index).sum())
        if n_match == 0:
            raise CellamaInputError(
                f"none of the {len(s)} labelled cell ids (e.g. {s.index[0]!r}) is a cell of the query "
                f"(e.g. {ids[0]!r}); use the labels produced for this query"
            )
        if n_match < min_fraction * len(ids):
            raise CellamaInputError(
                f"only {n_match} of the query's {len(ids)} cells have a label; use the labels produced "
                "for this query"
            )
        aligned = s.reindex(ids)
    else:
        values = np.asarray(labels, dtype=object)
        if values.ndim != 1 or len(values) != len(ids):
            raise CellamaInputError(f"{len(values)} labels for {len(ids)} cells; give one label per cell")
        aligned = pd.Series(values, index=ids)
    missing = aligned.isna().to_numpy()
    text = aligned.astype(object).where(~missing, missing_label).astype(str)
    text[text.str.strip() == ""] = missing_label
    return text, int(missing.sum())


def check_cell_types(selected, available) -> list[str]:
    """Selected cell types: at least one, each present among ``available``."""
    if isinstance(selected, str):
        selected = [selected]
    avail = sorted({str(a) for a in available})
    exact = set(avail)
    # a name is taken verbatim when it is a label (e.g. " B cell" with its space), else stripped
    chosen = list(dict.fromkeys(str(t) if str(t) in exact else str(t).strip()
                                for t in (selected or []) if str(t).strip()))
    if not chosen:
        raise CellamaInputError("choose at least one cell type to cluster by niche")
    unknown = [t for t in chosen if t not in avail]
    if unknown:
        shown = ", ".join(avail[:30]) + (" ..." if len(avail) > 30 else "")
        raise CellamaInputError(f"cell type(s) {', '.join(map(repr, unknown))} not in the labels; available: {shown}")
    return chosen


# --------------------------------------------------------------------------- embeddings (issue 13)


class NonFiniteEmbeddingError(CellamaInputError):
    """A model produced NaN or infinite embeddings: labels from them would be meaningless."""


def check_finite_embeddings(vectors, model: str = "the model", what: str = "embeddings") -> None:
    """Refuse NaN / infinite embedding rows before anything (kNN, cache, export) uses them."""
    vectors = np.asarray(vectors)
    if vectors.size == 0:
        return
    bad = ~np.isfinite(vectors).all(axis=1) if vectors.ndim == 2 else ~np.isfinite(vectors)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        raise NonFiniteEmbeddingError(
            f"{model} produced NaN or infinite {what} for {n_bad} of {len(bad)} sentences; the model "
            "folder is broken or incompatible: check --model (or fine-tune it again)"
        )


def check_usable_reference(labelled, usable, label_key: str) -> None:
    """At least one reference cell has a label *and* a detected shared gene; say which is lacking."""
    labelled = np.asarray(labelled, dtype=bool)
    usable = np.asarray(usable, dtype=bool)
    if usable.any():
        return
    if not labelled.any():
        raise CellamaInputError(f"the reference has no labelled cells in {label_key!r}")
    raise CellamaInputError(
        f"none of the {int(labelled.sum())} labelled reference cells has a detected gene of the shared panel; "
        "check that the reference holds counts of the panel's genes (gene symbols of the same species)"
    )
