"""UMAP of the plots panel (issue 17 item 11): fitted once per result on a subsample, the rest
placed by nearest neighbours, said in the title; a second draw does not recompute."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from napari_cellama._constants import CONFIDENCE, DISTANCE, TRANSFERRED_TYPE
from napari_cellama.core import Annotation
from napari_cellama.core.embedding_map import cached_map, embedding_map_of


def _clusters(n, d=24, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def test_fit_on_a_subsample_and_place_the_rest():
    q, q_lab = _clusters(600)
    r, _ = _clusters(150, seed=1)
    emap = embedding_map_of(q, r, max_fit=200)
    c = emap.coords
    query = c[c["dataset"] == "query"]
    assert sorted(query["row"]) == list(range(600))  # every query cell is on the map, once
    assert emap.n_fit == int((~c["placed"]).sum()) and 195 <= emap.n_fit <= 205
    assert emap.n_placed == int(query["placed"].sum()) == 600 - int((~query["placed"]).sum())
    assert not c.loc[c["dataset"] == "reference", "placed"].any()
    assert emap.note == f"UMAP of {emap.n_fit:,} cells; {emap.n_placed:,} placed by nearest neighbour"
    # a placed cell lands among fitted cells of its own cluster
    from sklearn.neighbors import KNeighborsClassifier

    fit, placed = query[~query["placed"]], query[query["placed"]]
    knn = KNeighborsClassifier(3).fit(fit[["x", "y"]], q_lab[fit["row"]])
    assert knn.score(placed[["x", "y"]], q_lab[placed["row"]]) > 0.9
    small = embedding_map_of(q[:50], None, max_fit=200)
    assert small.n_placed == 0 and small.note == "UMAP of 50 cells"


@dataclass(eq=False)
class _Result:
    table: pd.DataFrame
    query_embeddings: np.ndarray
    reference_embeddings: np.ndarray
    reference_labels: pd.Series


@pytest.mark.gui
def test_plots_compute_the_umap_once_per_result(viewer, qtbot):
    from napari_cellama._qt.plots_widget import PlotsWidget
    from napari_cellama.session import TransferState, get_session

    q, lab = _clusters(400, seed=2)
    r, r_lab = _clusters(100, seed=3)
    ids = [f"c{i}" for i in range(400)]
    names = np.array(["A", "B", "C", "D"], dtype=object)
    table = pd.DataFrame({TRANSFERRED_TYPE: names[lab], CONFIDENCE: 0.9, DISTANCE: 0.1}, index=ids)
    result = _Result(table, q, r, pd.Series(names[r_lab]))
    session = get_session(viewer)
    plots = PlotsWidget(viewer)
    viewer.window.add_dock_widget(plots)
    session.transfer = TransferState(result, Annotation(table))
    plots.compute_map(sync=True)
    assert plots.n_computed == 1 and cached_map(result) is not None
    assert plots.map_note == "UMAP of 500 cells"  # 400 query + 100 reference cells fit whole: nothing placed
    assert plots.figure.axes[0].get_title().startswith("UMAP of ")
    first = plots.map
    # drawing again, switching views, pressing the button again: no recomputation
    plots.view_combo.setCurrentText("composition")
    plots.view_combo.setCurrentText("UMAP")
    assert plots.compute_map(sync=True) is None and plots.n_computed == 1 and plots.map is first
    # another annotation of the same run (e.g. transfer + prototypes) reuses the map at once
    session.transfer = TransferState(result, Annotation(table.assign(**{CONFIDENCE: 0.5})))
    assert plots.map is first and plots.n_computed == 1
    assert len(plots.figure.axes[0].collections) >= 2  # drawn: reference and query points
    # a new result is computed afresh, off the GUI thread through the JobRunner
    other = _Result(table, q + 0.01, r, pd.Series(names[r_lab]))
    session.transfer = TransferState(other, Annotation(table))
    assert plots.map is None
    worker = plots.compute_map()
    assert worker is not None
    qtbot.waitUntil(lambda: plots.n_computed == 2, timeout=300_000)
    assert plots.map is not first and cached_map(other) is not None
