"""npe2 reader: a Xenium output folder (or its ``experiment.xenium``) -> napari layers.

``napari_get_reader(path)`` returns ``None`` for anything that is not a Xenium folder, so
napari can try other readers. For a Xenium folder it returns :func:`read_xenium_layers`,
which reads the run through ``spatialdata_io.xenium`` (see
:mod:`napari_cellama.io.xenium_run`) and returns layer-data tuples only: the morphology
image (multiscale), the cells (Labels, outlines, features keyed by ``cell_id``) and the
cell centroids (Points, hidden). Transcripts are not loaded here (the load widget adds
chosen genes).

A broken Xenium folder (missing ``cells.zarr.zip``, truncated ``cell_feature_matrix.h5``,
unreadable image, ...) does not raise into the viewer: a napari error notification names
the missing or broken file and the reader returns napari's "nothing to add" value
``[(None,)]``, so the viewer stays usable.

Importing this module is cheap (no numpy, anndata or spatialdata): the heavy imports are
inside :func:`read_xenium_layers`.
"""

from __future__ import annotations

import os

from .paths import xenium_root


def napari_get_reader(path):
    """The reader function for a Xenium folder, else None - never raises.

    napari calls this for every path dropped on the viewer whose name matches the
    manifest's patterns (every folder, and ``experiment.xenium``), so it only looks at the
    file system (:func:`napari_cellama.paths.xenium_root`, standard library only) and
    answers None for anything it cannot inspect (a path too long, no permission, ...).
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    if xenium_root(path) is None:
        return None
    return read_xenium_layers


def read_xenium_layers(path) -> list[tuple]:
    """Layer-data tuples of one Xenium run; on a broken run a notification and ``[(None,)]``."""
    from .io.xenium_run import open_xenium_run
    from .layers import xenium_layer_data
    from .validators import CellamaInputError

    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        run = open_xenium_run(path)
    except CellamaInputError as err:
        _notify_error(str(err))
        return [(None,)]
    return xenium_layer_data(run)


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-cellama could not open the Xenium run: {message}")
