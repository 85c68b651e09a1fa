"""The one module that turns Xenium data and per-cell results into napari layers.

Everything here returns napari ``LayerDataTuple`` s ``(data, kwargs, layer_type)`` (for the
reader and for ``napari.layers.Layer.create``) or updates an existing layer in place;
widgets only call these functions and add the results.

Units and alignment
-------------------
Every layer is in **microns**. Points (centroids, transcripts) carry micron coordinates
with ``scale = 1``. Rasters (morphology image, cell labels, per-cell maps) get
``scale = pixel_size`` and ``translate = pixel_size / 2``
(:func:`napari_cellama.io.xenium_run.raster_placement`): Xenium pixel ``i`` covers
``[i, i + 1) * pixel_size`` microns, napari centres pixel ``i`` at ``translate + i * scale``. Pyramid level ``k`` of the labels takes every ``2**k``-th
pixel, so napari's own level placement (pixel ``j`` at ``j * 2**k``) is exact for them.

Layers and their ``metadata[LAYER_META]`` (``LAYER_META == "cellama"``)
-----------------------------------------------------------------------
========================  =========  ================================================
factory                   type       ``metadata["cellama"]["kind"]``
========================  =========  ================================================
:func:`image_layer_data`  image      ``"morphology"`` (one layer per channel, multiscale)
:func:`cells_layer_data`  labels     ``"cells"`` (filled, translucent; features keyed by cell_id)
:func:`centroids_...`     points     ``"centroids"`` (hidden; same features)
:func:`transcripts_...`   points     ``"transcripts"`` (one colour per gene)
:func:`cell_categories_`  labels     ``"cell categories"`` (one colour per category)
:func:`cell_values_...`   image      ``"cell values"`` (a number per cell, colour-mapped)
:func:`niche_layer_data`  labels     ``"cell categories"`` (niche clusters; other cells grey)
========================  =========  ================================================

Every napari-cellama layer's metadata also holds ``xenium_root`` and ``pixel_size``.

Per-cell data
-------------
The cells Labels layer's ``features`` has one row per cell: ``index`` (the label value in
the image; napari uses it to show the hovered cell's row in the status bar), ``cell_id``,
``transcript_counts``, ``cell_area``, ``nucleus_area``. Results are added with
:func:`add_cell_features` (joined on ``cell_id``).

Recolouring many cells cheaply
------------------------------
A napari ``DirectLabelColormap`` with one entry per cell is rebuilt in O(cells) inside
napari (about 2-3 s for 85,000 cells here), so no layer here uses one. Categories and maps
(:func:`cell_categories_layer_data`, :func:`cell_values_layer_data`,
:func:`annotation_layer_data`) show ``lut[label]`` through :class:`LabelLookup`, a lazy
array that maps each requested tile through a per-label lookup table: changing what cells
show is an in-place update of the table (:func:`lookup_table`) plus ``layer.refresh()``,
and hiding or recolouring a category changes a colormap with one entry per category
(:func:`set_category_colors`). The lookup table lives in the layer's data only; the
metadata holds plain, serialisable descriptors (kind, run, category names, hidden names,
hex colours).
Keep the cells layer *selected* (e.g. on top with ``contour = 1``) so that hovering shows
every feature of the cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._constants import (
    CELL_AREA,
    CELL_ID,
    CELLS_LAYER_NAME,
    CENTROIDS_LAYER_NAME,
    KIND_CELL_CATEGORIES,
    KIND_CELL_VALUES,
    KIND_CELLS,
    KIND_CENTROIDS,
    KIND_IMAGE,
    KIND_TRANSCRIPTS,
    LABEL_ID,
    LAYER_META,
    NICHE_LAYER_NAME,
    NICHE_OTHER_CELLS,
    NICHE_OTHER_COLOR,
    TRANSCRIPT_COUNTS,
)
from .core.palette import category_colors, niche_colors, to_hex
from .io.xenium_run import TranscriptSample, XeniumRun, raster_placement

LayerDataTuple = tuple
NUCLEUS_AREA = "nucleus_area"
CELL_FEATURE_COLUMNS = (CELL_ID, TRANSCRIPT_COUNTS, CELL_AREA, NUCLEUS_AREA)
"""Columns (after ``index``) of the cells layer's features, when the run has them."""

TRANSPARENT = np.zeros(4, dtype=np.float32)

# --------------------------------------------------------------------------- helpers


def _meta(kind: str, root: Path | str | None, pixel_size: float | None, **extra) -> dict:
    return {
        LAYER_META: {
            "kind": kind,
            "xenium_root": str(root) if root is not None else None,
            "pixel_size": pixel_size,
            **extra,
        }
    }


def layer_kind(layer) -> str | None:
    """The napari-cellama kind of a layer (``"cells"``, ``"morphology"``, ...) or None."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(LAYER_META)
    return info.get("kind") if isinstance(info, dict) else None


def layer_info(layer) -> dict:
    """``layer.metadata["cellama"]`` (empty dict for other layers)."""
    info = (getattr(layer, "metadata", None) or {}).get(LAYER_META)
    return info if isinstance(info, dict) else {}


def find_layers(layers: Iterable, kind: str, root: str | Path | None = None) -> list:
    """Layers of one kind (optionally of one Xenium run), in layer-list order.

    ``layers`` is ``viewer.layers`` (or any iterable of layers).
    """
    out = []
    for layer in layers:
        info = layer_info(layer)
        if info.get("kind") != kind:
            continue
        if root is not None and info.get("xenium_root") != str(Path(root)):
            continue
        out.append(layer)
    return out


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


# --------------------------------------------------------------------------- Xenium run


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
    """One multiscale image layer per morphology channel, contrast limits from the data."""
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
        out.append((list(levels) if len(levels) > 1 else levels[0], kwargs, "image"))
    return out


def cells_layer_data(run: XeniumRun, name: str = CELLS_LAYER_NAME) -> LayerDataTuple:
    """Cell Labels (multiscale), filled at opacity 0.4; features keyed by ``cell_id``.

    (napari cannot take ``contour`` in a layer-data tuple; set ``layer.contour = 1`` on the
    added layer to draw outlines only, e.g. over a :func:`cell_categories_layer_data` layer.)
    """
    levels = run.cell_levels
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


# --------------------------------------------------------------------------- per-cell results


def add_cell_features(layer, values: pd.DataFrame | pd.Series, *, on: str = CELL_ID) -> None:
    """Add (or replace) columns of a cells layer's ``features``, joined on ``cell_id``.

    ``values`` is a DataFrame with a ``cell_id`` column or indexed by cell id (or a named
    Series indexed by cell id). Cells without a value get NaN (shown as nothing on hover).
    """
    if isinstance(values, pd.Series):
        values = values.to_frame()
    df = values.copy()
    if on in df.columns:
        df = df.set_index(on)
    df.index = df.index.astype(str)
    if not df.index.is_unique:
        raise ValueError("values must have one row per cell_id")
    feats = layer.features.copy()
    keys = feats[on].astype(str)
    for col in df.columns:
        feats[col] = df[col].reindex(keys).to_numpy()
    layer.features = feats


class LabelLookup:
    """Lazy array ``lut[base]``: each requested region of ``base`` mapped through ``lut``.

    ``base`` is one level of the cell-label image (numpy, zarr or dask); ``lut`` a 1-D array
    indexed by label value (entry 0 is the background). The lookup happens when napari asks
    for a tile, so changing ``lut`` in place and calling ``layer.refresh()`` recolours all
    cells at the cost of one tile, not one entry per cell. Labels beyond the table map to
    ``lut[0]``.
    """

    def __init__(self, base, lut: np.ndarray) -> None:
        self.base = base
        self.lut = lut

    @property
    def shape(self) -> tuple:
        return tuple(self.base.shape)

    @property
    def dtype(self):
        return self.lut.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        block = np.asarray(self.base[key])
        lut = self.lut
        if block.size and block.max(initial=0) >= len(lut):
            block = np.where(block < len(lut), block, 0)
        return lut[block]

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out


def _cell_levels(cells_layer) -> list:
    data = cells_layer.data
    return list(data) if cells_layer.multiscale else [data]


def _label_lut(cells_layer, cell_ids, values, fill, dtype) -> np.ndarray:
    feats = cells_layer.features
    labels = feats["index"].to_numpy(np.int64)
    lut = np.full(int(labels.max(initial=0)) + 1, fill, dtype=dtype)
    pos = pd.Index(feats[CELL_ID].astype(str)).get_indexer(
        pd.Index(np.asarray(cell_ids).astype(str))
    )
    ok = pos >= 0
    lut[labels[pos[ok]]] = np.asarray(values)[ok]
    lut[0] = fill
    return lut


def lookup_table(layer) -> np.ndarray:
    """The per-label lookup table behind a :class:`LabelLookup` layer (shared by its levels)."""
    data = layer.data
    first = data[0] if layer.multiscale else data
    if not isinstance(first, LabelLookup):
        raise ValueError(f"layer {layer.name!r} is not drawn through a LabelLookup")
    return first.lut


def _set_lookup_table(layer, lut: np.ndarray) -> None:
    for level in layer.data if layer.multiscale else [layer.data]:
        level.lut = lut


def _placement(cells_layer) -> dict:
    return {"scale": tuple(cells_layer.scale), "translate": tuple(cells_layer.translate)}


def cell_categories_layer_data(
    cells_layer,
    cell_ids: Sequence[str],
    categories: Sequence[str],
    *,
    name: str = "cell types",
    colors: Mapping[str, object] | None = None,
    hidden: Iterable[str] = (),
) -> LayerDataTuple:
    """A Labels layer painting every cell with its category's colour (cheap to update).

    Pixel value = category code (1..K, in sorted category order; 0 = background and cells
    without a category). ``features`` has one row per code (``index``, ``category``) and the
    metadata keeps ``categories`` and ``hidden``. Colours come from ``colors`` (e.g. the
    session's :class:`~napari_cellama.core.palette.TypeColors`), else
    :func:`~napari_cellama.core.palette.category_colors`; categories in ``hidden`` are transparent.
    """
    names = sorted({str(c) for c in categories})
    code_of = {n: i + 1 for i, n in enumerate(names)}
    codes = np.array(
        [code_of[str(c)] for c in categories], dtype=np.uint16 if len(names) < 65535 else np.uint32
    )
    lut = _label_lut(cells_layer, cell_ids, codes, 0, codes.dtype)
    data = [LabelLookup(level, lut) for level in _cell_levels(cells_layer)]
    info = layer_info(cells_layer)
    kwargs = {
        "name": name,
        "multiscale": len(data) > 1,
        "features": pd.DataFrame({"index": np.arange(1, len(names) + 1), "category": names}),
        "colormap": _category_colormap(names, colors, hidden),
        "opacity": 0.75,
        "blending": "translucent",
        "metadata": _meta(
            KIND_CELL_CATEGORIES,
            info.get("xenium_root"),
            info.get("pixel_size"),
            categories=names,
            hidden=sorted(set(hidden)),
        ),
        **_placement(cells_layer),
    }
    return (data if len(data) > 1 else data[0], kwargs, "labels")


def _category_colormap(
    names: Sequence[str], colors: Mapping[str, object] | None, hidden: Iterable[str]
):
    from napari.utils.colormaps import DirectLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    base = category_colors(names)
    if colors:
        base.update({k: transform_color(v)[0] for k, v in colors.items()})
    hidden = set(hidden)
    mapping = {
        i + 1: (TRANSPARENT if n in hidden else np.asarray(base[n], dtype=np.float32))
        for i, n in enumerate(names)
    }
    mapping[0] = TRANSPARENT
    mapping[None] = TRANSPARENT
    return DirectLabelColormap(color_dict=mapping)


def set_category_colors(
    layer, colors: Mapping[str, object] | None = None, hidden: Iterable[str] = ()
) -> None:
    """Recolour / hide categories of a :func:`cell_categories_layer_data` layer (K entries)."""
    info = layer_info(layer)
    info["hidden"] = sorted(set(hidden))
    layer.colormap = _category_colormap(info["categories"], colors, hidden)


def cell_values_layer_data(
    cells_layer,
    cell_ids: Sequence[str],
    values: Sequence[float],
    *,
    name: str,
    colormap: str = "viridis",
    contrast_limits: tuple[float, float] | None = None,
) -> LayerDataTuple:
    """An Image layer showing a number per cell (confidence, distance, ...) over its mask.

    Background and cells without a value are NaN (transparent); napari's colour bar
    (``layer.colorbar.visible = True``) shows the scale.
    """
    vals = np.asarray(values, dtype=np.float32)
    lut = _label_lut(cells_layer, cell_ids, vals, np.nan, np.float32)
    data = [LabelLookup(level, lut) for level in _cell_levels(cells_layer)]
    finite = vals[np.isfinite(vals)]
    if contrast_limits is None:
        contrast_limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if contrast_limits[1] <= contrast_limits[0]:
            contrast_limits = (contrast_limits[0], contrast_limits[0] + 1.0)
    info = layer_info(cells_layer)
    kwargs = {
        "name": name,
        "multiscale": len(data) > 1,
        "colormap": colormap,
        "contrast_limits": list(contrast_limits),
        "interpolation2d": "nearest",
        "metadata": _meta(KIND_CELL_VALUES, info.get("xenium_root"), info.get("pixel_size")),
        **_placement(cells_layer),
    }
    return (data if len(data) > 1 else data[0], kwargs, "image")


# --------------------------------------------------------------------------- annotation layers


def _direct_colormap(color_dict: Mapping):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=dict(color_dict))


def annotation_layer_data(cells_layer, annotation, *, name: str = "cell types") -> LayerDataTuple:
    """A Labels layer painting every cell with its type from an :class:`~napari_cellama.core.Annotation`.

    Pixel value = type code + 1 through :class:`LabelLookup` over the cell labels, so a
    threshold change or an edit rewrites one small lookup table (``label -> code``) and a
    visibility change swaps a colormap with one entry per type (:func:`refresh_annotation_labels`,
    :func:`refresh_annotation_colors`).
    ``features`` lists the types (``index``, ``cell_type``) so hovering names the type.
    """
    lut = annotation.label_code_lut()
    data = [LabelLookup(level, lut) for level in _cell_levels(cells_layer)]
    info = layer_info(cells_layer)
    kwargs = {
        "name": name,
        "multiscale": len(data) > 1,
        "features": _type_features(annotation),
        "colormap": _direct_colormap(annotation.type_color_dict()),
        "opacity": 0.8,
        "blending": "translucent",
        "metadata": _meta(
            KIND_CELL_CATEGORIES,
            info.get("xenium_root"),
            info.get("pixel_size"),
            annotation=True,
        ),
        **_placement(cells_layer),
    }
    return (data if len(data) > 1 else data[0], kwargs, "labels")


def _type_features(annotation) -> pd.DataFrame:
    cats = list(annotation.categories)
    return pd.DataFrame({"index": np.arange(1, len(cats) + 1), "cell_type": cats})


def refresh_annotation_labels(layer, annotation) -> None:
    """After a threshold change, an edit, undo / redo or a new type: rewrite the lookup table
    (``label -> type code``) of an :func:`annotation_layer_data` layer, its type list and colours."""
    lut = annotation.label_code_lut()
    current = lookup_table(layer)
    if len(lut) == len(current):
        current[:] = lut
    else:  # label range changed: swap the lookup of every level
        _set_lookup_table(layer, lut)
    if len(layer.features) != len(annotation.categories):
        layer.features = _type_features(annotation)
    layer.colormap = _direct_colormap(annotation.type_color_dict())
    layer.refresh()


def refresh_annotation_colors(layer, annotation) -> None:
    """After a visibility or colour change: swap the per-type colormap only (K entries)."""
    layer.colormap = _direct_colormap(annotation.type_color_dict())


def selection_layer(cells_layer, *, name: str = "selected cells"):
    """A Labels layer outlining selected cells (update with :func:`set_selected_cells`)."""
    from napari.layers import Labels

    n = int(cells_layer.features["index"].to_numpy().max(initial=0)) + 1
    lut = np.zeros(n, dtype=np.uint8)
    data = [LabelLookup(level, lut) for level in _cell_levels(cells_layer)]
    info = layer_info(cells_layer)
    kwargs = {
        "name": name,
        "multiscale": len(data) > 1,
        "colormap": _direct_colormap(
            {1: np.array([1.0, 1.0, 1.0, 1.0], np.float32), None: TRANSPARENT}
        ),
        "opacity": 1.0,
        "metadata": _meta("selection", info.get("xenium_root"), info.get("pixel_size")),
        **_placement(cells_layer),
    }
    layer = Labels(data if len(data) > 1 else data[0], **kwargs)
    layer.contour = 2
    return layer


def set_selected_cells(layer, label_ids: Sequence[int]) -> None:
    """Outline exactly the cells with these label values."""
    lut = lookup_table(layer)
    lut[:] = 0
    ids = np.asarray(label_ids, dtype=np.int64)
    ids = ids[(ids > 0) & (ids < len(lut))]
    lut[ids] = 1
    layer.refresh()


# --------------------------------------------------------------------------- niche clusters (issue 5)


def niche_layer_data(
    cells_layer,
    cell_ids: Sequence[str],
    clusters: Sequence[str],
    *,
    name: str = NICHE_LAYER_NAME,
    colors: Mapping[str, object] | None = None,
    hidden: Iterable[str] = (),
    other_color=NICHE_OTHER_COLOR,
) -> LayerDataTuple:
    """A Labels layer of niche clusters: clustered cells coloured by cluster, all others grey.

    ``cell_ids`` / ``clusters`` are the clustered cells and their cluster (NaN: not
    clustered). Every other cell of ``cells_layer`` falls in the category
    :data:`NICHE_OTHER_CELLS`, drawn dimmed in ``other_color``. Built with
    :func:`cell_categories_layer_data` (so :class:`LabelLookup`-backed and cheap to update);
    colours default to :func:`~napari_cellama.core.palette.niche_colors` (a palette no cell
    type uses). The metadata also keeps ``clusters`` (the cluster names) and ``colors``
    (``#rrggbbaa``), which :func:`set_niche_hidden` reuses.
    """
    ids = pd.Index(np.asarray(cell_ids).astype(str))
    values = pd.Series(np.asarray(clusters, dtype=object), index=ids)
    values = values[values.notna()].astype(str)
    if (values == NICHE_OTHER_CELLS).any():
        raise ValueError(f"{NICHE_OTHER_CELLS!r} is reserved for the cells that were not clustered")
    all_ids = pd.Index(cells_layer.features[CELL_ID].astype(str))
    cats = pd.Series(NICHE_OTHER_CELLS, index=all_ids, dtype=object)
    known = values.index[values.index.isin(all_ids)]
    cats.loc[known] = values.loc[known].to_numpy()
    names = sorted(set(values.tolist()))
    palette = {**niche_colors(names), **dict(colors or {}), NICHE_OTHER_CELLS: other_color}
    data, kwargs, layer_type = cell_categories_layer_data(
        cells_layer, all_ids, cats.to_numpy(), name=name, colors=palette, hidden=hidden
    )
    kwargs["opacity"] = 0.9
    kwargs["metadata"][LAYER_META].update(niche=True, clusters=names, colors=_hex_colors(palette))
    return (data, kwargs, layer_type)


def _hex_colors(colors: Mapping) -> dict[str, str]:
    from napari.utils.colormaps.standardize_color import transform_color

    return {str(k): to_hex(transform_color(v)[0], alpha=True) for k, v in colors.items()}


def set_niche_hidden(layer, hidden: Iterable[str] = ()) -> None:
    """Hide (make transparent) the given clusters of a :func:`niche_layer_data` layer."""
    set_category_colors(layer, layer_info(layer).get("colors"), hidden)
