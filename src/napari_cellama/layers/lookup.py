"""Per-cell categories and values drawn through a lookup table over the cell labels.

:class:`LabelLookup` maps each requested tile of the cell-label image through a per-label
table, so recolouring every cell is an in-place change of the table plus ``layer.refresh()``
(:func:`lookup_table`), and hiding or recolouring a category swaps a colormap with one entry
per category (:func:`set_category_colors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .._constants import CELL_ID, KIND_CELL_CATEGORIES, KIND_CELL_VALUES
from ..core.palette import category_colors
from .meta import _meta, layer_info

LayerDataTuple = tuple
TRANSPARENT = np.zeros(4, dtype=np.float32)


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
    def chunks(self):
        """The tile grid of a :class:`~.tiles.TiledLevel` base (napari reads whole tiles), else None."""
        from .tiles import TiledLevel

        return self.base.chunks if isinstance(self.base, TiledLevel) else None

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
    from .xenium import _feature_rows  # the cells layer's row matching, cached per id index

    feats = cells_layer.features
    labels = feats["index"].to_numpy(np.int64)
    lut = np.full(int(labels.max(initial=0)) + 1, fill, dtype=dtype)
    index = cell_ids if isinstance(cell_ids, pd.Index) else pd.Index(np.asarray(cell_ids))
    pos = _feature_rows(feats, index, CELL_ID)  # each feature row's position in cell_ids
    ok = pos >= 0
    lut[labels[ok]] = np.asarray(values)[pos[ok]]
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


def redraw(layer) -> None:
    """``layer.refresh()`` after its lookup table changed in place.

    napari 0.9 keeps the coarsest level of a multiscale layer materialised (its thumbnail
    level, ``layer._level_materializer``, an ``lru_cache``) and shows that copy whenever the
    view is zoomed out to that level, so a plain refresh would keep the old colours there;
    the copy is dropped first (re-made from the lookup at the next slice: one small level).
    """
    _drop_level_copy(layer)
    layer.refresh()


def _drop_level_copy(layer) -> None:
    import warnings

    with warnings.catch_warnings():  # napari 0.9 warns on private attributes read by plugins
        warnings.simplefilter("ignore", FutureWarning)
        materializer = getattr(layer, "_level_materializer", None)
    if materializer is not None and hasattr(materializer, "cache_clear"):
        materializer.cache_clear()


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
