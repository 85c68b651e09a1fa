"""The load dock's jobs (Qt-free): reference columns, run + reference + panel check, transcripts, demo.

Each job is a plain function or a progress generator (``yield (stage, done, total)``,
``return result``) run by the dock's :class:`~napari_cellama._qt._runner.JobRunner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    LABEL_ID,
    STAGE_PANEL,
    STAGE_READ_REFERENCE,
    STAGE_READ_XENIUM,
    STAGE_TRANSCRIPTS,
)
from ..validators import CellamaInputError


@dataclass
class LoadResult:
    """What one load produced (handed from the worker to the GUI thread)."""

    query: object
    reference: object
    label_key: str
    panel: object
    coverage: pd.DataFrame
    top_k: int
    xenium_root: Path
    reference_path: Path
    layer_data: list  # layer-data tuples to add (empty when the run's layers were open)


def read_obs_columns(path: str) -> list[str]:
    """Label-column candidates of an ``.h5ad``, reading only its ``obs``."""
    import h5py
    from anndata.io import read_elem

    from ..core.coverage import label_columns
    from ..validators import check_file

    p = check_file(path, "reference", suffixes=(".h5ad",))
    try:
        with h5py.File(p, "r") as f:
            obs = read_elem(f["obs"])
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(
            f"reference {p} could not be read as .h5ad ({type(err).__name__}: {err})"
        ) from None
    cols = label_columns(obs)
    if not cols:
        raise CellamaInputError(
            f"reference {p.name} has no categorical column in obs to use as cell-type labels"
        )
    return cols


def load_job(xenium_path, cells_features, reference_path, label_key, top_k, n_markers):
    """Generator run in a worker thread; yields ``(stage, done, total)``, returns LoadResult.

    ``xenium_path``: the run. ``cells_features``: the features of its cells layer when that
    layer is already open (then only the table is read and no layer is made), else None.
    """
    from ..core.coverage import iter_marker_coverage
    from ..core.panel import shared_panel
    from ..io import read_reference, read_xenium_table
    from ..io.xenium import xenium_root
    from ..io.xenium_run import iter_open_xenium_run
    from ..layers import xenium_layer_data
    from ..validators import check_label_key

    root = xenium_root(xenium_path)
    if root is None:
        raise CellamaInputError(
            f"{xenium_path} is not a Xenium output folder (no experiment.xenium)"
        )
    layer_data: list = []
    if cells_features is None:
        run = yield from iter_open_xenium_run(root)
        layer_data = xenium_layer_data(run)
        query = run.table
    else:
        yield (STAGE_READ_XENIUM, 0, 1)
        query = read_xenium_table(root)
        label_of = pd.Series(
            cells_features["index"].to_numpy(np.int64),
            index=cells_features[CELL_ID].astype(str).to_numpy(),
        )
        query.obs[LABEL_ID] = (
            label_of.reindex(query.obs_names.astype(str)).fillna(0).astype(np.int64).to_numpy()
        )
        yield (STAGE_READ_XENIUM, 1, 1)
    yield (STAGE_READ_REFERENCE, 0, 1)
    reference = read_reference(reference_path)
    check_label_key(reference, label_key)
    yield (STAGE_READ_REFERENCE, 1, 1)
    yield (STAGE_PANEL, 0, 1)
    _, _, report = shared_panel(query, reference, top_k)
    yield (STAGE_PANEL, 1, 1)
    coverage = yield from iter_marker_coverage(reference, label_key, report.shared_genes, n_markers)
    return LoadResult(
        query=query,
        reference=reference,
        label_key=label_key,
        panel=report,
        coverage=coverage,
        top_k=top_k,
        xenium_root=root,
        reference_path=Path(reference_path),
        layer_data=layer_data,
    )


def transcripts_job(root, genes, max_points):
    from ..io.xenium_run import read_transcripts
    from ..layers import transcripts_layer_data

    yield (STAGE_TRANSCRIPTS, 0, 1)
    sample = read_transcripts(root, genes, max_points=max_points)
    yield (STAGE_TRANSCRIPTS, 1, 1)
    return transcripts_layer_data(sample, root=root)


def demo_job():
    from ..datasets import iter_make_demo

    demo = yield from iter_make_demo()
    return demo
