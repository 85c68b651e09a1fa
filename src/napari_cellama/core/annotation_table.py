"""Reading the per-cell table an :class:`~napari_cellama.core.Annotation` is built on: checks,
the base label source of each cell, restored manual-label reasons, category columns (Qt-free)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import CONFIDENCE, DISTANCE, LABEL_SOURCE, NICHE_CLUSTER, TRANSFERRED_TYPE
from ..validators import CellamaInputError


def _base_sources(base: pd.DataFrame) -> np.ndarray:
    """Source of each cell's non-manual label: the table's ``label_source`` (manual entries of a
    saved table fall back to ``transfer``), else ``transfer``."""
    if LABEL_SOURCE not in base:
        return np.full(len(base), "transfer", dtype=object)
    src = base[LABEL_SOURCE].astype(object).where(base[LABEL_SOURCE].notna(), "transfer").astype(str)
    return np.where(src.str.startswith("manual:"), "transfer", src).astype(object)


def _manual_reasons(base: pd.DataFrame, is_manual: np.ndarray) -> np.ndarray:
    """Reasons of restored manual labels, from a saved ``label_source`` (``manual:<reason>``)."""
    if LABEL_SOURCE not in base:
        return np.full(int(is_manual.sum()), "manual", dtype=object)
    src = base[LABEL_SOURCE].astype(str).to_numpy()[is_manual]
    return np.array([s.split(":", 1)[1] if s.startswith("manual:") else "manual" for s in src], dtype=object)


def _as_category(values: pd.Series) -> pd.Series:
    """Categorical with string categories (missing values stay missing)."""
    cat = pd.Categorical(values.to_numpy(dtype=object))
    names = [str(c) for c in cat.categories]
    if len(set(names)) == len(names):
        cat = cat.rename_categories(names)
    return pd.Series(cat, index=values.index, name=NICHE_CLUSTER)


def _check_table(table) -> None:
    if not isinstance(table, pd.DataFrame):
        raise CellamaInputError("the annotation needs the per-cell transfer table (a pandas DataFrame)")
    missing = [c for c in (TRANSFERRED_TYPE, CONFIDENCE, DISTANCE) if c not in table.columns]
    if missing:
        raise CellamaInputError(
            f"the transfer table lacks column(s) {', '.join(missing)}; use the table of run_transfer"
        )
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()][:3].tolist()
        raise CellamaInputError(f"the transfer table has duplicate cell ids (e.g. {dup})")
