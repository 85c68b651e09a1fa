"""Query and reference readers: ``.h5ad`` files and Xenium folders."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..validators import CellamaInputError, check_file
from .xenium import read_xenium_table, xenium_root


def is_xenium_path(path: str | Path) -> bool:
    """True for a Xenium output folder or its ``experiment.xenium`` file."""
    return xenium_root(path) is not None


def read_anndata(path: str | Path, what: str = "file") -> ad.AnnData:
    """Read an ``.h5ad`` with a one-line error for missing or broken files."""
    p = check_file(path, what, suffixes=(".h5ad",))
    if p.is_dir():
        raise CellamaInputError(f"{what} {p} is a folder; expected an .h5ad file")
    try:
        return ad.read_h5ad(p)
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(f"{what} {p} could not be read as .h5ad ({type(err).__name__}: {err})") from None


def _has_negative(x) -> bool:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return bool(data.size) and float(data.min()) < 0


def expression_for_sentences(adata: ad.AnnData) -> ad.AnnData:
    """The matrix whose within-cell ranking makes the sentences.

    ``layers['counts']`` if present; else ``X`` unless it holds negative values
    (scaled data), in which case ``raw`` (counts or log-normalised) is used. Scaled
    values rank genes by z-score, not by expression, so they are refused.
    """
    if "counts" in adata.layers:
        out = ad.AnnData(X=adata.layers["counts"], obs=adata.obs, var=adata.var)
    elif adata.X is not None and not _has_negative(adata.X):
        return adata
    elif adata.raw is not None and not _has_negative(adata.raw.X):
        out = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var)
    else:
        raise CellamaInputError(
            "the expression matrix has negative values (scaled data) and no .raw or "
            "layers['counts'] to fall back on; provide counts or log-normalised values"
        )
    out.obsm = adata.obsm.copy() if "spatial" in adata.obsm else out.obsm
    return out


def read_query(path: str | Path) -> ad.AnnData:
    """A query: an ``.h5ad`` or a Xenium output folder (read with spatialdata-io)."""
    p = Path(path).expanduser()
    if is_xenium_path(p):
        return read_xenium_table(p)
    if not p.exists():
        raise CellamaInputError(f"query not found: {p} (give an .h5ad file or a Xenium output folder)")
    if p.is_dir():
        raise CellamaInputError(f"query {p} is a folder without experiment.xenium; is it a Xenium output folder?")
    return expression_for_sentences(read_anndata(p, "query"))


def read_reference(path: str | Path) -> ad.AnnData:
    """A labelled scRNA reference ``.h5ad`` (see :func:`expression_for_sentences`)."""
    return expression_for_sentences(read_anndata(path, "reference"))
