"""Restore an annotation session from an export (Qt-free): :func:`load_session`.

The writers live in :mod:`napari_cellama.io.export`; this module reads what they wrote
(``uns['cellama']`` JSON entries, the result columns) and names the damaged field when
something does not parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    LABEL_SOURCE,
    NEAREST_REFERENCE,
    OBSM_EMBEDDING,
    RUNNER_UP,
    SENTENCE,
    SOURCE,
    SPATIALDATA_REFERENCE_TABLE,
    SPATIALDATA_TABLE,
    TRANSFERRED_TYPE,
    UNASSIGNED_REASON,
    UNKNOWN_SCORE,
    UNS_KEY,
)
from ..core.annotation import Annotation
from ..validators import CellamaInputError
from .destinations import is_zarr_store as _is_zarr_store
from .export import RESULT_COLUMNS


@dataclass
class Session:
    """Everything a saved export holds to restore an annotation session."""

    annotation: Annotation
    """The review state: labels with manual edits and source, threshold, colours, history."""
    params: dict
    panel: dict | None
    embeddings: np.ndarray | None
    """Query embeddings (rows in ``annotation.cell_ids`` order)."""
    reference_embeddings: np.ndarray | None = None
    reference_labels: pd.Series | None = None
    inputs: dict = field(default_factory=dict)
    """Input paths recorded at export (``query``: the Xenium folder, ``reference``)."""
    adata: Any = None
    """The cells table as read (AnnData)."""
    sdata: Any = None
    """The SpatialData as read (lazy elements: ``cell_labels``, ``cell_boundaries`` ...); None for .h5ad."""
    path: Path | None = None
    recorded_provenance: list = field(default_factory=list)
    """``uns['cellama']['provenance']`` as written by the export (empty for older exports)."""

    @property
    def table(self) -> pd.DataFrame:
        return self.annotation.table

    @property
    def colors(self) -> dict:
        return self.annotation.hex_colors

    @property
    def history(self) -> list[dict]:
        return self.annotation.history_records()

    @property
    def provenance(self) -> list[dict]:
        """The steps that made the labels as exported (``uns['cellama']['provenance']``)."""
        return list(self.recorded_provenance or self.annotation.provenance)

    def transfer_result(self):
        """A :class:`~napari_cellama.core.TransferResult` for plots and re-export."""
        from ..core.panel import PanelReport
        from ..core.pipeline import TransferResult

        table = self.annotation.table
        panel = PanelReport(**self.panel) if self.panel else None
        return TransferResult(table, self.embeddings, self.reference_embeddings, self.reference_labels,
                              panel, dict(self.params))


_UNS_TYPES = {"params": dict, "panel": dict, "colors": dict, "history": list, "session": dict, "inputs": dict,
              "provenance": list}
_TYPE_WORDS = {dict: "a JSON object", list: "a JSON list"}


def _loads(uns: dict, key: str, default):
    raw = uns.get(key)
    if raw is None:
        return default
    if isinstance(raw, np.ndarray):
        raw = raw.item() if raw.shape == () else str(raw)
    try:
        value = json.loads(str(raw))
    except ValueError:
        raise CellamaInputError(f"uns['{UNS_KEY}']['{key}'] is not valid JSON; the export is damaged") from None
    if value is None:
        return default
    kind = _UNS_TYPES.get(key)
    if kind is not None and not isinstance(value, kind):
        raise CellamaInputError(
            f"uns['{UNS_KEY}']['{key}'] should be {_TYPE_WORDS[kind]}, found {type(value).__name__}; "
            "the export is damaged"
        )
    return value


def _numeric_column(obs: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(obs[col], errors="coerce")
    bad = values.isna().to_numpy() & obs[col].notna().to_numpy()
    if bad.any():
        example = obs[col][bad].iloc[0]
        raise CellamaInputError(
            f"column '{col}' of the saved table holds non-numeric values (e.g. {example!r}); the export is damaged"
        )
    return values.to_numpy(dtype=float)


def session_from_anndata(adata, *, sdata=None, path=None) -> Session:
    """Restore a :class:`Session` from a cells table written by :func:`cells_anndata`."""
    uns = adata.uns.get(UNS_KEY)
    if not isinstance(uns, dict) or "session" not in uns:
        raise CellamaInputError(
            f"{path or 'this table'} was not written by napari-cellama (no uns['{UNS_KEY}']); "
            "open a zarr or .h5ad exported by the plugin"
        )
    params = _loads(uns, "params", {})
    panel = _loads(uns, "panel", None)
    colors = _loads(uns, "colors", {})
    history = _loads(uns, "history", [])
    state = _loads(uns, "session", {})
    inputs = _loads(uns, "inputs", {})
    provenance = _loads(uns, "provenance", [])
    for key in ("min_confidence", "max_distance", "max_history"):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CellamaInputError(
                f"uns['{UNS_KEY}']['session']['{key}'] should be a number, found {value!r}; the export is damaged"
            )
    state = dict(state, colors=colors, history=history)
    obs = adata.obs
    missing = [c for c in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, CONFIDENCE, DISTANCE) if c not in obs]
    if missing:
        raise CellamaInputError(f"the saved table lacks column(s) {', '.join(missing)}; the export is damaged")
    cols = [c for c in RESULT_COLUMNS if c in obs]
    table = obs[cols].copy()
    table.index = pd.Index(obs.index.astype(str), name=CELL_ID)
    for col in (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, RUNNER_UP, UNASSIGNED_REASON, NEAREST_REFERENCE, SENTENCE,
                LABEL_SOURCE):
        if col in table:
            table[col] = table[col].astype(str).to_numpy(dtype=object)
    if UNKNOWN_SCORE in table:
        table[UNKNOWN_SCORE] = _numeric_column(obs, UNKNOWN_SCORE)
    for col in (CONFIDENCE, DISTANCE):
        table[col] = _numeric_column(obs, col)
    try:
        ann = Annotation.from_state(table, state)
    except CellamaInputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise CellamaInputError(
            f"the saved session state in uns['{UNS_KEY}'] (session, colors or history) is damaged "
            f"({type(err).__name__}: {err})"
        ) from None
    emb = adata.obsm.get(OBSM_EMBEDDING)
    ref_emb = ref_labels = None
    if sdata is not None and SPATIALDATA_REFERENCE_TABLE in sdata.tables:
        ref = sdata.tables[SPATIALDATA_REFERENCE_TABLE]
        ref_emb = np.asarray(ref.obsm[OBSM_EMBEDDING], dtype=np.float32)
        ref_labels = pd.Series(ref.obs[CELL_TYPE].astype(str).to_numpy(), index=ref.obs_names.astype(str),
                               name=CELL_TYPE)
    return Session(
        annotation=ann,
        params=params,
        panel=panel,
        embeddings=None if emb is None else np.asarray(emb, dtype=np.float32),
        reference_embeddings=ref_emb,
        reference_labels=ref_labels,
        inputs=inputs,
        adata=adata,
        sdata=sdata,
        path=None if path is None else Path(path),
        recorded_provenance=provenance,
    )


def load_session(path) -> Session:
    """Read a SpatialData zarr written by :func:`write_spatialdata` (or an ``.h5ad`` written
    by :func:`write_h5ad`) and return the :class:`Session` to restore."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CellamaInputError(f"saved session not found: {p} (check the path)")
    if p.is_file() and p.name.lower().endswith(".h5ad"):
        import anndata as ad

        try:
            adata = ad.read_h5ad(p)
        except Exception as err:  # noqa: BLE001
            raise CellamaInputError(f"{p} could not be read as .h5ad ({type(err).__name__}: {err})") from None
        return session_from_anndata(adata, path=p)
    if not p.is_dir() or not _is_zarr_store(p):
        raise CellamaInputError(f"{p} is not a SpatialData zarr folder; open the .zarr written by the export")
    import spatialdata

    try:
        sdata = spatialdata.read_zarr(p)
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(f"{p} could not be read as SpatialData ({type(err).__name__}: {err})") from None
    if SPATIALDATA_TABLE not in sdata.tables:
        raise CellamaInputError(f"{p} has no '{SPATIALDATA_TABLE}' table; open a zarr exported by napari-cellama")
    return session_from_anndata(sdata.tables[SPATIALDATA_TABLE], sdata=sdata, path=p)
