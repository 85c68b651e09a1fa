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
show is an in-place update of the table (:func:`lookup_table`) plus a redraw
(:func:`redraw`: also drops napari's cached copy of the coarsest level) and hiding or recolouring a category changes a colormap with one entry per category
(:func:`set_category_colors`). The lookup table lives in the layer's data only; the
metadata holds plain, serialisable descriptors (kind, run, category names, hidden names,
hex colours).
Keep the cells layer *selected* (e.g. on top with ``contour = 1``) so that hovering shows
every feature of the cell.

Modules: :mod:`.meta` (metadata, finding layers), :mod:`.xenium` (the run's layers and
per-cell features), :mod:`.lookup` (``LabelLookup`` categories and values),
:mod:`.annotation` (cell types of a review, selection outlines), :mod:`.niche` (niche
clusters). Import everything from ``napari_cellama.layers``.
"""

from __future__ import annotations

from .annotation import (
    annotation_layer_data,
    refresh_annotation_colors,
    refresh_annotation_labels,
    selection_layer,
    set_selected_cells,
)
from .lookup import (
    LabelLookup,
    cell_categories_layer_data,
    cell_values_layer_data,
    lookup_table,
    redraw,
    set_category_colors,
)
from .meta import find_layers, layer_info, layer_kind
from .niche import niche_layer_data, set_niche_hidden
from .xenium import (
    CELL_FEATURE_COLUMNS,
    LayerDataTuple,
    add_cell_features,
    cell_features,
    cells_layer_data,
    centroids_layer_data,
    image_layer_data,
    transcripts_layer_data,
    xenium_layer_data,
)

__all__ = [
    "CELL_FEATURE_COLUMNS",
    "LabelLookup",
    "LayerDataTuple",
    "add_cell_features",
    "annotation_layer_data",
    "cell_categories_layer_data",
    "cell_features",
    "cell_values_layer_data",
    "cells_layer_data",
    "centroids_layer_data",
    "find_layers",
    "image_layer_data",
    "layer_info",
    "layer_kind",
    "lookup_table",
    "niche_layer_data",
    "redraw",
    "refresh_annotation_colors",
    "refresh_annotation_labels",
    "selection_layer",
    "set_category_colors",
    "set_niche_hidden",
    "set_selected_cells",
    "transcripts_layer_data",
    "xenium_layer_data",
]
