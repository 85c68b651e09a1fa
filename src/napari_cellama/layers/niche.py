"""The ``niche clusters`` layer: clustered cells coloured by niche (a palette no cell type uses),
every other cell dimmed grey."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .._constants import CELL_ID, LAYER_META, NICHE_LAYER_NAME, NICHE_OTHER_CELLS, NICHE_OTHER_COLOR
from ..core.palette import niche_colors, to_hex
from .lookup import cell_categories_layer_data, set_category_colors
from .meta import layer_info

LayerDataTuple = tuple


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
