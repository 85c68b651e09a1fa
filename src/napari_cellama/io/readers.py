"""Query and reference readers: ``.h5ad`` files and Xenium folders."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
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
    elif adata.X is None:
        raise CellamaInputError(
            "the file has no expression matrix (X is empty) and no .raw or layers['counts']; "
            "save the counts (or log-normalised values) in X"
        )
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


# --------------------------------------------------------------------------- reference labels (issue 13)
MISSING_LABEL_TEXT = ("", "nan", "none", "null", "na", "n/a", "<na>")
"""Label text (after stripping spaces, any case) that means "no label": such cells do not vote."""

SENTINEL_SUFFIX = " (reference)"
"""Appended to a reference label that equals one of the tool's own labels (``Unassigned``, ``Unknown``)."""


class LabelWarning(UserWarning):
    """Reference labels were changed so that they cannot be confused with missing values or sentinels."""


def sentinel_labels() -> tuple[str, ...]:
    """Labels napari-cellama gives cells itself (never a reference's own cell type)."""
    from .. import _constants as c

    return tuple(dict.fromkeys((c.UNASSIGNED, getattr(c, "UNKNOWN", "Unknown"))))


def clean_labels(labels) -> tuple[pd.Series, dict]:
    """Reference labels with missing-looking text as missing and sentinel names kept apart.

    Returns ``(labels, changes)``: empty / blank strings and ``nan``, ``None``, ``NA``
    ... written as text become missing (those cells do not vote); a label equal to one of
    :func:`sentinel_labels` (any case) becomes ``"<label> (reference)"``, so a transferred
    ``Unassigned`` always means "no confident match". ``changes`` counts both.
    """
    s = pd.Series(labels)
    values = s.astype(object)
    text = values.map(lambda v: v.strip().casefold() if isinstance(v, str) else None)
    missing = text.isin(MISSING_LABEL_TEXT).to_numpy(dtype=bool)
    sentinels = {t.casefold() for t in sentinel_labels()}
    clash = text.isin(sentinels).to_numpy(dtype=bool)
    changes = {"missing": int(missing.sum()), "renamed": sorted({str(v) for v in values[clash]})}
    if not missing.any() and not clash.any():
        return s, changes
    out = values.copy()
    out[missing] = np.nan
    out[clash] = [f"{str(v).strip()}{SENTINEL_SUFFIX}" for v in values[clash]]
    return pd.Series(out.to_numpy(), index=s.index, name=s.name), changes


def clean_reference_labels(reference: ad.AnnData, label_key: str) -> ad.AnnData:
    """``reference`` (a copy, only if needed) with ``obs[label_key]`` cleaned by :func:`clean_labels`.

    Checks the column first (:func:`~napari_cellama.validators.check_label_key`) and
    warns (:class:`LabelWarning`) with what changed.
    """
    import warnings

    from ..validators import check_label_key

    check_label_key(reference, label_key)
    labels, changes = clean_labels(reference.obs[label_key])
    if not changes["missing"] and not changes["renamed"]:
        return reference
    reference = reference.copy()
    reference.obs[label_key] = labels.to_numpy()
    if changes["missing"]:
        warnings.warn(f"{changes['missing']} reference cells have an empty or 'nan'/'None' label in "
                      f"{label_key!r}; they are treated as unlabelled and do not vote", LabelWarning, stacklevel=2)
    if changes["renamed"]:
        warnings.warn(f"reference label(s) {', '.join(map(repr, changes['renamed']))} equal napari-cellama's own "
                      f"labels; renamed to '<label>{SENTINEL_SUFFIX}' so they stay apart", LabelWarning,
                      stacklevel=2)
    check_label_key(reference, label_key)
    return reference
