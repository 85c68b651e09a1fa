"""Layers of a review: the ``cell types`` of an :class:`~napari_cellama.core.Annotation`, kept in
step through its named signals (:func:`refresh_annotation_labels`, :func:`refresh_annotation_colors`),
and the ``selected cells`` outlines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .._constants import KIND_CELL_CATEGORIES
from .lookup import (
    TRANSPARENT,
    LabelLookup,
    _cell_levels,
    _drop_level_copy,
    _placement,
    _set_lookup_table,
    lookup_table,
    redraw,
)
from .meta import _meta, layer_info

LayerDataTuple = tuple


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
    lut = _code_lut(annotation)
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


def _code_lut(annotation) -> np.ndarray:
    """``label -> type code + 1`` as uint16 (uint32 past 65,534 types): napari draws uint8 / uint16
    labels as they are, but maps every shown pixel of wider ones through its colormap's dict
    (about 60 ms per 1920x1080 tile here, on each redraw)."""
    lut = annotation.label_code_lut()
    return lut.astype(np.uint16 if len(annotation.categories) < 65535 else np.uint32, copy=False)


def _type_features(annotation) -> pd.DataFrame:
    cats = list(annotation.categories)
    return pd.DataFrame({"index": np.arange(1, len(cats) + 1), "cell_type": cats})


def refresh_annotation_labels(layer, annotation) -> None:
    """After a threshold change, an edit, undo / redo or a new type: bring an
    :func:`annotation_layer_data` layer in step with ``annotation``, at the cost of what changed.

    Only the entries of the lookup table (``label -> type code``) that differ are written; the
    type list (hover features) is replaced only when the types changed; the colormap (one
    entry per type) is replaced only when the type -> colour mapping changed (napari re-maps
    the shown tile on every colormap assignment); the layer is redrawn once, and not at all
    when nothing changed."""
    lut = _code_lut(annotation)
    current = lookup_table(layer)
    changed_lut = False
    if len(lut) == len(current) and lut.dtype == current.dtype:
        changed = np.flatnonzero(current != lut)
        if changed.size:
            current[changed] = lut[changed]
            changed_lut = True
    else:  # label range changed: swap the lookup of every level
        _set_lookup_table(layer, lut)
        changed_lut = True
    if len(layer.features) != len(annotation.categories) or list(layer.features["cell_type"]) != annotation.categories:
        layer.features = _type_features(annotation)
    if changed_lut:
        _drop_level_copy(layer)  # see lookup.redraw
    if _set_colors(layer, annotation.type_color_dict()):
        return  # assigning the colormap redrew the layer
    if changed_lut:
        layer.refresh()


def refresh_annotation_colors(layer, annotation) -> None:
    """After a visibility or colour change: swap the per-type colormap (K entries), if it changed."""
    _set_colors(layer, annotation.type_color_dict())


def _set_colors(layer, color_dict: Mapping) -> bool:
    """Assign a :class:`DirectLabelColormap` of ``color_dict`` unless the layer already shows
    exactly these colours; True when it was assigned (napari then redraws the layer)."""
    if same_colors(layer.colormap, color_dict):
        return False
    layer.colormap = _direct_colormap(color_dict)
    return True


def same_colors(colormap, color_dict: Mapping) -> bool:
    """Whether a napari label colormap maps every key of ``color_dict`` to the same RGBA and
    any other key to ``color_dict[None]`` (K comparisons; False for a non-direct colormap)."""
    current = getattr(colormap, "color_dict", None)
    if current is None or not set(color_dict) <= set(current):
        return False
    # napari adds entries of its own (the background 0): they must show the default colour
    default = color_dict.get(None, TRANSPARENT)
    return all(np.allclose(np.asarray(current[key], np.float32),
                           np.asarray(color_dict.get(key, default), np.float32), atol=1e-6)
               for key in current)


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
    redraw(layer)
