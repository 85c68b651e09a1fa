"""Export per-cell results and restore an annotation session (Qt-free).

Writers (each writes to a temporary sibling and renames it into place, and refuses any
destination inside a Xenium output folder):

* :func:`write_spatialdata` - a SpatialData zarr: the cells table (``obs`` columns,
  embeddings in ``obsm['X_cellama']``, parameters / panel report / colours / edit
  history in ``uns['cellama']``), the Xenium run's cell labels and boundaries (and,
  optionally, its image), and the reference embeddings for the UMAP panel; the labels'
  provenance (:mod:`napari_cellama.core.provenance`) in ``uns['cellama']['provenance']``. Read it back
  with :func:`load_session` (or ``spatialdata.read_zarr``).
* :func:`write_h5ad` - the same cells table as an ``.h5ad``.
* :func:`write_explorer_csv` - a Xenium Explorer cell-groups CSV.
* :func:`write_cells_csv` - a plain per-cell CSV.

``uns['cellama']`` holds JSON text (one string per entry): AnnData cannot store ``None``
or keys such as ``CD4+/CD45RA+`` (a ``/`` is a path in zarr and HDF5), and cell-type
names are arbitrary, so JSON keeps every value exact.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    EXPLORER_COLOR,
    EXPLORER_GROUP,
    LABEL_ID,
    LABEL_SOURCE,
    NEAREST_REFERENCE,
    NICHE_CLUSTER,
    OBSM_EMBEDDING,
    REVIEWED,
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
from ..atomic import write_dir, write_file
from ..core.annotation import Annotation
from ..core.palette import niche_color, palette_color, to_hex
from ..core.provenance import recorded_inputs
from ..validators import CellamaInputError
from . import destinations as _dest
from .csv_safety import safe_for_spreadsheets
from .destinations import (  # noqa: F401
    check_destination,
    is_zarr_store,
    write_zarr_marker,
    xenium_folder_containing,
)

FORMAT_VERSION = 1
RESULT_COLUMNS = (CELL_TYPE, SOURCE, TRANSFERRED_TYPE, CONFIDENCE, DISTANCE, RUNNER_UP, NEAREST_REFERENCE,
                  SENTENCE, NICHE_CLUSTER, LABEL_ID, UNKNOWN_SCORE, UNASSIGNED_REASON, LABEL_SOURCE, REVIEWED)
"""Per-cell result columns (in this order) of every export."""

XENIUM_INSTANCE_KEY = "cell_labels"
"""Column of spatialdata-io's Xenium table holding each cell's id in the ``cell_labels`` raster."""


# --------------------------------------------------------------------------- destinations
# the checks live in .destinations, the atomic writes in ..atomic (one place each)
def _write_dir_atomic(p: Path, write) -> None:
    """Write a zarr store atomically, with the marker that lets this tool replace it later."""
    def write_marked(tmp):
        write(tmp)
        write_zarr_marker(tmp, kind="session", format_version=FORMAT_VERSION)

    write_dir(p, write_marked, suffix=".zarr")


# --------------------------------------------------------------------------- tables
def _json(value) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def as_annotation(annotation, params: dict | None = None) -> Annotation:
    """An :class:`Annotation` from an Annotation or a transfer table (threshold from ``params``)."""
    if isinstance(annotation, Annotation):
        return annotation
    if isinstance(annotation, pd.DataFrame):
        params = params or {}
        return Annotation(annotation, min_confidence=params.get("min_confidence", 0.0) or 0.0,
                          max_distance=params.get("max_distance"))
    raise CellamaInputError("export needs an Annotation or the per-cell transfer table")


def results_frame(annotation) -> pd.DataFrame:
    """Per-cell results in export order (index: cell id), strings as plain ``str``."""
    ann = as_annotation(annotation)
    t = ann.table
    cols = [c for c in RESULT_COLUMNS if c in t] + [c for c in t.columns if c not in RESULT_COLUMNS]
    t = t[cols].copy()
    for col in (TRANSFERRED_TYPE, RUNNER_UP, UNASSIGNED_REASON, NEAREST_REFERENCE, SENTENCE):
        if col in t:
            t[col] = t[col].astype(object).where(t[col].notna(), "").astype(str)
    if NICHE_CLUSTER in t:  # categorical: SpatialData's writer would turn a missing value into "nan"
        t[NICHE_CLUSTER] = pd.Categorical(t[NICHE_CLUSTER])
    return t


def _align_rows(ids: pd.Index, other_index: pd.Index, what: str) -> np.ndarray:
    pos = pd.Index(other_index.astype(str)).get_indexer(ids)
    if (pos < 0).any():
        missing = ids[pos < 0]
        raise CellamaInputError(
            f"{len(missing)} annotated cells are not in the {what} (e.g. {missing[0]!r}); "
            "export with the query the transfer ran on"
        )
    return pos


def _embeddings_for(ann: Annotation, result) -> np.ndarray | None:
    if result is None or getattr(result, "query_embeddings", None) is None:
        return None
    emb = np.asarray(result.query_embeddings, dtype=np.float32)
    index = pd.Index(result.table.index.astype(str))
    if len(index) != len(emb):
        raise CellamaInputError(f"{len(emb)} embeddings for {len(index)} cells in the transfer result")
    return emb[_align_rows(ann.cell_ids, index, "transfer result")]


def _uns(ann: Annotation, result=None, params=None, inputs=None) -> dict:
    state = ann.state()
    params = dict(params if params is not None else (getattr(result, "params", None) or {}))
    params["min_confidence"] = ann.min_confidence
    params["max_distance"] = ann.max_distance
    panel = getattr(result, "panel", None)
    from .. import __version__

    session = {k: v for k, v in state.items() if k not in ("colors", "history")}
    provenance = ann.provenance
    # the inputs of the run that made the labels, not whatever is loaded now (issue 17, item 5)
    inputs = {**(inputs or {}), **recorded_inputs(provenance)}
    inputs.pop("label_key", None)
    return {
        "format_version": FORMAT_VERSION,
        "software": f"napari-cellama {__version__}",
        "params": _json(params),
        "panel": _json(panel.to_dict() if hasattr(panel, "to_dict") else panel),
        "colors": _json(state["colors"]),
        "history": _json(state["history"]),
        "session": _json(session),
        "inputs": _json({k: str(v) for k, v in (inputs or {}).items() if v is not None}),
        "provenance": _json(provenance),
    }


def cells_anndata(annotation, result=None, *, query=None, params: dict | None = None,
                  inputs: dict | None = None):
    """The cells table as AnnData.

    ``obs``: the query's own columns (when ``query`` is given) then the per-cell results;
    ``X`` / ``var`` / ``obsm['spatial']`` from ``query``; ``obsm['X_cellama']`` the query
    embeddings of ``result``; ``uns['cellama']`` parameters, panel report, colours,
    edit history and session state as JSON text; ``uns['cell_type_colors']`` the colours
    of ``obs['cell_type']``'s categories (scanpy's convention).
    """
    import anndata as ad

    params = params if params is not None else getattr(result, "params", None)
    ann = as_annotation(annotation, params)
    res = results_frame(ann)
    ids = ann.cell_ids
    if query is not None:
        pos = _align_rows(ids, query.obs_names, "query")
        sub = query[pos]
        obs = sub.obs.copy()
        obs.index = ids
        keep = [c for c in obs.columns if c not in res.columns]
        obs = pd.concat([obs[keep], res], axis=1)
        adata = ad.AnnData(X=sub.X, obs=obs, var=sub.var.copy())
        for key, value in sub.obsm.items():
            adata.obsm[key] = np.asarray(value)
        if LABEL_ID not in res and XENIUM_INSTANCE_KEY in obs:
            adata.obs[LABEL_ID] = obs[XENIUM_INSTANCE_KEY].to_numpy()
    else:
        adata = ad.AnnData(obs=res)
    adata.obs.index.name = None
    emb = _embeddings_for(ann, result)
    if emb is not None:
        adata.obsm[OBSM_EMBEDDING] = emb
    adata.uns[UNS_KEY] = _uns(ann, result, params, inputs)
    adata.uns[f"{CELL_TYPE}_colors"] = np.asarray([ann.hex_colors[c] for c in ann.categories], dtype=object)
    return adata


def reference_anndata(result):
    """Reference embeddings (``obsm['X_cellama']``) and labels (``obs['cell_type']``) of a run."""
    import anndata as ad

    emb = getattr(result, "reference_embeddings", None)
    labels = getattr(result, "reference_labels", None)
    if emb is None or labels is None:
        return None
    labels = pd.Series(labels)
    obs = pd.DataFrame({CELL_TYPE: pd.Categorical(labels.astype(str).to_numpy())},
                       index=pd.Index(labels.index.astype(str)))
    if not obs.index.is_unique:
        obs.index = pd.Index([f"ref_{i}" for i in range(len(obs))])
    adata = ad.AnnData(obs=obs)
    adata.obsm[OBSM_EMBEDDING] = np.asarray(emb, dtype=np.float32)
    return adata


# --------------------------------------------------------------------------- writers
def write_h5ad(path, annotation, result=None, *, query=None, params=None, inputs=None,
               sources=()) -> Path:
    """Write the cells table (see :func:`cells_anndata`) as ``.h5ad``; returns the path."""
    p = check_destination(path, "h5ad file", sources=sources)
    adata = cells_anndata(annotation, result, query=query, params=params, inputs=inputs)
    write_file(p, lambda tmp: adata.write_h5ad(tmp), suffix=".h5ad")
    return p


def explorer_groups(annotation, column: str = CELL_TYPE, colors: bool = True) -> pd.DataFrame:
    """The Xenium Explorer cell-groups table: ``cell_id``, ``group`` (and ``color``, ``#rrggbb``).

    ``column`` is ``cell_type`` (colours of the session) or another per-cell column such
    as ``niche_cluster`` (niche-palette colours in category order). Cells without a value are
    left out (Xenium Explorer leaves them ungrouped).
    """
    ann = as_annotation(annotation)
    t = ann.table
    if column not in t:
        raise CellamaInputError(f"no per-cell column {column!r} to export as cell groups")
    values = t[column]
    keep = values.notna().to_numpy()
    groups = values[keep].astype(str)
    out = pd.DataFrame({CELL_ID: t.index[keep].astype(str), EXPLORER_GROUP: groups.to_numpy()})
    if colors:
        if column == CELL_TYPE:
            palette = ann.hex_colors
        else:
            cats = values.astype("category").cat.categories
            color = niche_color if column == NICHE_CLUSTER else palette_color
            palette = {str(c): to_hex(color(i)) for i, c in enumerate(cats)}
        out[EXPLORER_COLOR] = groups.map(palette).to_numpy()
    return out


def write_explorer_csv(path, annotation, *, column: str = CELL_TYPE, colors: bool = True,
                       sources=()) -> Path:
    """Write a Xenium Explorer cell-groups CSV.

    Format (as 10x publishes ``*_cell_groups.csv`` and Xenium Explorer's Cell groups
    import reads it): UTF-8, comma separated, a header line ``cell_id,group,color``,
    one line per cell, ``color`` as ``#rrggbb`` (optional for Xenium Explorer; left out
    with ``colors=False``), no index column, fields quoted only when they contain a
    comma, quote or line break. Cell ids are written verbatim (Explorer matches them);
    a group name starting like a spreadsheet formula gets a leading ``'`` (see
    :mod:`napari_cellama.io.csv_safety`).
    """
    p = check_destination(path, "Xenium Explorer CSV", sources=sources)
    df = safe_for_spreadsheets(explorer_groups(annotation, column, colors), columns=[EXPLORER_GROUP],
                               index=False)
    write_file(p, lambda tmp: df.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL,
                                                lineterminator="\n", encoding="utf-8"))
    return p


def write_cells_csv(path, annotation, *, columns=None, sources=()) -> Path:
    """Write every per-cell result (or ``columns``) as a CSV with a ``cell_id`` first column.

    Text starting like a spreadsheet formula (``= + - @``, tab, CR) gets a leading ``'``."""
    p = check_destination(path, "cells CSV", sources=sources)
    t = results_frame(annotation)
    if columns is not None:
        missing = [c for c in columns if c not in t]
        if missing:
            raise CellamaInputError(f"no per-cell column(s) {', '.join(map(repr, missing))} to export")
        t = t[list(columns)]
    t.index.name = CELL_ID
    t = safe_for_spreadsheets(t)
    write_file(p, lambda tmp: t.to_csv(tmp, float_format="%.6g", lineterminator="\n",
                                               encoding="utf-8"))
    return p


def build_spatialdata(annotation, result=None, *, query=None, xenium=None, sdata=None,
                      include_image: bool = False, include_reference: bool = True,
                      params=None, inputs=None):
    """A SpatialData holding the cells table and the Xenium run's labels / boundaries.

    Elements come from ``sdata`` (an already read SpatialData) or are read from the
    Xenium folder ``xenium`` (cell labels and cell boundaries; the morphology image
    with ``include_image``). The table is then built on the run's own table (its counts
    as ``X``, its obs) and annotates the ``cell_labels`` element (instance key
    ``cell_labels``); ``query`` is not needed. Without either, the table stands alone
    (``X`` from ``query`` if given).
    """
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    params = params if params is not None else getattr(result, "params", None)
    ann = as_annotation(annotation, params)
    if sdata is None and xenium is not None:
        from .xenium import read_xenium

        sdata = read_xenium(xenium, labels=True, boundaries=True, image=include_image)
    labels, shapes, images = {}, {}, {}
    region = region_key = instance_key = None
    if sdata is not None:
        labels = dict(sdata.labels)
        shapes = dict(sdata.shapes)
        if include_image:
            images = dict(sdata.images)
        xt = sdata.tables.get(SPATIALDATA_TABLE) if hasattr(sdata, "tables") else None
        if xt is not None:
            attrs = xt.uns.get(TableModel.ATTRS_KEY, {})
            region = attrs.get(TableModel.REGION_KEY)
            region_key = attrs.get(TableModel.REGION_KEY_KEY)
            instance_key = attrs.get(TableModel.INSTANCE_KEY)
            # the run's own table carries the instance ids that link cells to the labels
            query = xt.copy()
            if CELL_ID in query.obs:
                query.obs_names = query.obs[CELL_ID].astype(str).to_numpy()
    table = cells_anndata(ann, result, query=query, params=params, inputs=inputs)
    annotated = region is not None and region_key in table.obs and instance_key in table.obs
    if annotated and isinstance(region, str) and region not in labels and region not in shapes:
        annotated = False
    if annotated:
        table.obs[region_key] = pd.Categorical(table.obs[region_key].astype(str))
        table = TableModel.parse(table, region=region, region_key=region_key, instance_key=instance_key)
    else:
        table = TableModel.parse(table)
    tables = {SPATIALDATA_TABLE: table}
    if include_reference:
        ref = reference_anndata(result)
        if ref is not None:
            tables[SPATIALDATA_REFERENCE_TABLE] = TableModel.parse(ref)
    return SpatialData(images=images, labels=labels, shapes=shapes, tables=tables)


def write_spatialdata(path, annotation, result=None, *, query=None, xenium=None, sdata=None,
                      include_image: bool = False, include_reference: bool = True, params=None,
                      inputs=None, overwrite: bool = False, sources=(), replace_foreign: bool = False) -> Path:
    """Write the session as a SpatialData zarr at ``path``; returns the path.

    See :func:`build_spatialdata` for the content. The zarr is written to a temporary
    sibling and renamed into place, with napari-cellama's marker file at its root. An
    existing zarr at ``path`` is replaced only with ``overwrite=True`` and only if
    napari-cellama wrote it (a zarr store of another tool also needs
    ``replace_foreign=True``; a folder that is not a zarr store never). Any destination
    inside a Xenium output folder (or inside ``xenium`` / ``sources``) is refused.
    """
    srcs = [xenium, *sources]
    p = check_destination(path, "SpatialData zarr", sources=srcs, folder=True, overwrite=overwrite,
                          replace_foreign=replace_foreign)
    if inputs is None and xenium is not None:
        inputs = {"query": str(_dest._resolved(xenium))}
    sd = build_spatialdata(annotation, result, query=query, xenium=xenium,
                           sdata=sdata, include_image=include_image, include_reference=include_reference,
                           params=params, inputs=inputs)
    def write(tmp):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*autosharding.*")
            sd.write(tmp, update_sdata_path=False)

    _write_dir_atomic(p, write)
    return p


# sessions are read back by io/session_file.py (re-exported here for existing imports)
from .session_file import Session, load_session, session_from_anndata  # noqa: E402,F401
