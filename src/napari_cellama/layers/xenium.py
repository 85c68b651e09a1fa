"""Layers of a Xenium run: morphology image, cell labels, centroids, transcripts; per-cell features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import (
    CELL_AREA,
    CELL_ID,
    CELLS_LAYER_NAME,
    CENTROIDS_LAYER_NAME,
    KIND_CELLS,
    KIND_CENTROIDS,
    KIND_IMAGE,
    KIND_TRANSCRIPTS,
    LABEL_ID,
    TRANSCRIPT_COUNTS,
)
from ..core.palette import category_colors
from ..io.xenium_run import TranscriptSample, XeniumRun, raster_placement
from .meta import _meta

LayerDataTuple = tuple
NUCLEUS_AREA = "nucleus_area"
CELL_FEATURE_COLUMNS = (CELL_ID, TRANSCRIPT_COUNTS, CELL_AREA, NUCLEUS_AREA)
"""Columns (after ``index``) of the cells layer's features, when the run has them."""


def cell_features(table) -> pd.DataFrame:
    """Per-cell features of a Xenium table: ``index`` (label value), cell_id, counts, areas."""
    obs = table.obs
    if LABEL_ID not in obs:
        raise ValueError("the table has no 'label' column (read the run with its cell labels)")
    df = pd.DataFrame(
        {"index": obs[LABEL_ID].to_numpy(np.int64), CELL_ID: np.asarray(table.obs_names, dtype=str)}
    )
    for col in CELL_FEATURE_COLUMNS[1:]:
        if col in obs:
            df[col] = obs[col].to_numpy()
    return df.sort_values("index", kind="stable").reset_index(drop=True)


def xenium_layer_data(
    run: XeniumRun, *, image: bool = True, cells: bool = True, centroids: bool = True
) -> list[LayerDataTuple]:
    """The reader's layers of a run: image channel(s), cells (labels), centroids (hidden)."""
    out: list[LayerDataTuple] = []
    if image and run.image_levels:
        out.extend(image_layer_data(run))
    if cells and run.cell_levels:
        out.append(cells_layer_data(run))
    if centroids:
        out.append(centroids_layer_data(run))
    return out


def image_layer_data(run: XeniumRun) -> list[LayerDataTuple]:
    """One multiscale image layer per morphology channel, contrast limits from the data
    (lazy levels read through the shared tile cache, :mod:`.tiles`)."""
    from .tiles import tiled_levels

    place = raster_placement(run.pixel_size)
    colormaps = (
        ["gray"]
        if len(run.image_levels) == 1
        else ["blue", "green", "magenta", "yellow", "cyan", "red"]
    )
    out = []
    for i, (channel, levels) in enumerate(run.image_levels.items()):
        kwargs = {
            "name": channel,
            "multiscale": len(levels) > 1,
            "contrast_limits": list(run.image_contrast[channel]),
            "colormap": colormaps[i % len(colormaps)],
            "blending": "additive" if i else "translucent_no_depth",
            "metadata": _meta(
                KIND_IMAGE, run.root, run.pixel_size, channel=channel, source=run.image_source
            ),
            **place,
        }
        levels = tiled_levels(list(levels))
        out.append((levels if len(levels) > 1 else levels[0], kwargs, "image"))
    return out


def cells_layer_data(run: XeniumRun, name: str = CELLS_LAYER_NAME) -> LayerDataTuple:
    """Cell Labels (multiscale), filled at opacity 0.4; features keyed by ``cell_id``.

    Lazy levels are read through the shared tile cache (:mod:`.tiles`): napari sees small
    chunks, and each stored chunk is decoded once for this layer and every lookup over it.

    (napari cannot take ``contour`` in a layer-data tuple; set ``layer.contour = 1`` on the
    added layer to draw outlines only, e.g. over a :func:`cell_categories_layer_data` layer.)
    """
    from .tiles import tiled_levels

    levels = tiled_levels(list(run.cell_levels))
    kwargs = {
        "name": name,
        "multiscale": len(levels) > 1,
        "features": cell_features(run.table),
        "opacity": 0.4,
        "blending": "translucent",
        "metadata": _meta(KIND_CELLS, run.root, run.pixel_size, n_cells=run.n_cells),
        **raster_placement(run.pixel_size),
    }
    return (list(levels) if len(levels) > 1 else levels[0], kwargs, "labels")


def centroids_layer_data(
    run: XeniumRun, name: str = CENTROIDS_LAYER_NAME, visible: bool = False
) -> LayerDataTuple:
    """Cell centroids (microns) as points, hidden by default; same features as the cells."""
    xy = np.asarray(run.table.obsm["spatial"], dtype=np.float64)[:, :2]
    features = (
        cell_features(run.table)
        if LABEL_ID in run.table.obs
        else pd.DataFrame({CELL_ID: np.asarray(run.table.obs_names, dtype=str)})
    )
    if "index" in features:
        order = pd.Index(np.asarray(run.table.obs_names, dtype=str)).get_indexer(features[CELL_ID])
        xy = xy[order]
        features = features.rename(columns={"index": LABEL_ID})
    kwargs = {
        "name": name,
        "features": features,
        "size": 3.0,
        "face_color": "yellow",
        "border_width": 0,
        "visible": visible,
        "metadata": _meta(KIND_CENTROIDS, run.root, run.pixel_size),
    }
    return (xy[:, ::-1].copy(), kwargs, "points")


def transcripts_layer_data(
    sample: TranscriptSample,
    root: str | Path | None = None,
    name: str | None = None,
    size: float = 1.5,
) -> LayerDataTuple:
    """Transcripts of chosen genes, one colour per gene; the name says how many are shown."""
    pts = sample.points
    genes = list(pts["gene"].cat.categories)
    if name is None:
        what = ", ".join(genes[:4]) + (f" +{len(genes) - 4}" if len(genes) > 4 else "")
        count = (
            f"{sample.n_shown:,} of {sample.n_total:,}"
            if sample.subsampled
            else f"{sample.n_total:,}"
        )
        name = f"transcripts: {what} ({count})"
    colors = category_colors(genes)
    kwargs = {
        "name": name,
        "features": pts[["gene", CELL_ID, "qv"]].reset_index(drop=True),
        # explicit per-point colours: each gene keeps its category_colors() colour
        "face_color": np.stack([colors[g] for g in genes])[pts["gene"].cat.codes.to_numpy()],
        "size": size,
        "border_width": 0,
        "metadata": _meta(
            KIND_TRANSCRIPTS,
            root,
            None,
            genes=genes,
            n_shown=sample.n_shown,
            n_total=sample.n_total,
            per_gene_total=dict(sample.per_gene_total),
        ),
    }
    data = np.column_stack([pts["y"].to_numpy(np.float64), pts["x"].to_numpy(np.float64)])
    return (data, kwargs, "points")




def add_cell_features(layer, values: pd.DataFrame | pd.Series, *, on: str = CELL_ID) -> None:
    """Add (or replace) columns of a cells layer's ``features``, joined on ``cell_id``.

    ``values`` is a DataFrame with a ``cell_id`` column or indexed by cell id (or a named
    Series indexed by cell id). Cells without a value get NaN (shown as nothing on hover).

    Cheap when repeated (the transfer dock calls it after every threshold change or edit):
    the row of each cell is matched once per ``values`` index and kept with the layer, and
    columns the layer already has are replaced in place (napari re-indexes a Labels layer's
    whole feature table, one dict entry per cell, when ``features`` is assigned).
    """
    if isinstance(values, pd.Series):
        values = values.to_frame()
    df = values.set_index(on) if on in values.columns else values
    feats = layer.features
    pos = _feature_rows(feats, df.index, on)
    missing = pos < 0
    safe = np.where(missing, 0, pos)
    new = {}
    for col in df.columns:
        vals = df[col].to_numpy()
        if not len(vals):
            new[col] = np.full(len(pos), np.nan)
            continue
        taken = vals[safe]
        if missing.any():
            taken = pd.Series(taken).where(~missing).to_numpy()
        new[col] = taken
    if all(col in feats.columns for col in new):
        for col, vals in new.items():
            feats[col] = vals  # in place: napari keeps its table and its label index
        return
    matched = _ROWS[id(feats)][1:]
    feats = feats.copy()
    for col, vals in new.items():
        feats[col] = vals
    layer.features = feats
    _remember(layer.features, *matched)  # napari keeps a copy: the same rows


_ROWS: dict = {}
"""``id(features) -> (weakref to features, index, positions)`` of :func:`_feature_rows` (a few)."""


def _feature_rows(feats: pd.DataFrame, index: pd.Index, on: str) -> np.ndarray:
    """Position in ``index`` of each row of ``feats`` (-1: absent), kept for the same ``index``
    and the same feature table (napari's ``layer.features`` object; no attribute is put on
    the layer itself, which napari forbids to plugins)."""

    cached = _ROWS.get(id(feats))
    if cached is not None and cached[0]() is feats and len(cached[1]) == len(index) and (
            cached[1] is index or cached[1].equals(index)):
        return cached[2]
    index = pd.Index(index.astype(str))
    if not index.is_unique:
        raise ValueError("values must have one row per cell_id")
    pos = index.get_indexer(pd.Index(feats[on].astype(str)))
    _remember(feats, index, pos)
    return pos


def _remember(feats, index, pos) -> None:
    import weakref

    for key in [k for k, v in _ROWS.items() if v[0]() is None]:
        del _ROWS[key]
    while len(_ROWS) >= 8:
        del _ROWS[next(iter(_ROWS))]
    _ROWS[id(feats)] = (weakref.ref(feats), index, pos)
