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


def check_top_k(top_k: int) -> int:
    """``top_k`` must be a positive integer."""
    if isinstance(top_k, bool) or int(top_k) != top_k or int(top_k) < 1:
        raise CellamaInputError(f"top-k must be a positive whole number, got {top_k!r}")
    return int(top_k)


def check_n_neighbors(k: int, n_reference: int | None = None) -> int:
    """``k`` must be a positive integer; it is capped at the number of reference cells."""
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise CellamaInputError(f"the number of neighbours must be a positive whole number, got {k!r}")
    k = int(k)
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
