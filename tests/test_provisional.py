"""Provisional labels (issue 15): a surrogate run publishes kNN labels of the surrogate's
embeddings before its exact refinement (core, no Qt), and the transfer dock shows them as
``cell types (provisional)`` until the final ``cell types`` replace them (real viewer, the
demo run, the fast hash embedder under a real SurrogateEmbedder)."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from _hash_embedder import HashEmbedder

from napari_cellama._constants import (
    CELL_TYPE,
    EMBED_MODE,
    EMBED_MODE_SURROGATE,
    PROVISIONAL_LAYER,
    STAGE_EMBED_QUERY,
    STAGE_PROVISIONAL,
    STAGE_SURROGATE_CHECK,
)
from napari_cellama.core import iter_transfer
from napari_cellama.core.provisional import ProvisionalChannel, active_channel, listening
from napari_cellama.core.surrogate import SurrogateEmbedder
from napari_cellama.io import expression_for_sentences

LABEL = "bulk_labels"


def _surrogate():
    emb = SurrogateEmbedder(HashEmbedder(), n_fit=60, n_check=40)
    emb.exact_below = 0  # small test data: use the surrogate anyway
    return emb


@pytest.fixture(scope="module")
def pbmc():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    idx = np.random.default_rng(2).permutation(adata.n_obs)
    return adata[idx[:250]].copy(), adata[idx[250:]].copy()


def _drive(gen):
    stages = []
    while True:
        try:
            stages.append(next(gen)[0])
        except StopIteration as stop:
            return stop.value, stages


class _Recording(ProvisionalChannel):
    def __init__(self):
        super().__init__()
        self.tables = []

    def publish(self, table, **info):
        self.tables.append((table, dict(info)))
        super().publish(table, **info)


def test_a_surrogate_run_publishes_provisional_labels_to_a_listener(pbmc):
    ref, query = pbmc
    channel = _Recording()
    with listening(channel):
        assert active_channel() is channel
        result, stages = _drive(iter_transfer(query, ref, LABEL, embedder=_surrogate()))
    assert active_channel() is None
    # the check's labels of the run's own method from the surrogate vectors, before re-embedding
    at = [i for i, s in enumerate(stages) if s == STAGE_PROVISIONAL]
    assert len(at) == 1
    assert at[0] > max(i for i, s in enumerate(stages) if s == STAGE_EMBED_QUERY)
    assert stages[at[0] - 1] == STAGE_SURROGATE_CHECK and at[0] < len(stages) - 1  # before the end of the run
    table = channel.take()
    assert channel.published == 1 and channel.take() is None
    assert table is channel.tables[0][0] and channel.tables[0][1]["source"] == "surrogate check"
    assert list(table.index) == list(query.obs_names)
    assert set(table[CELL_TYPE]) <= set(ref.obs[LABEL].astype(str)) | {"Unassigned", "Unknown"}
    assert channel.info["embedding_mode"] == EMBED_MODE_SURROGATE
    assert result.params[EMBED_MODE] == EMBED_MODE_SURROGATE
    # the check's labels are the final ones except for cells whose sentence it re-embedded
    check = result.params["surrogate_check"]
    final = result.table[CELL_TYPE].astype(str).to_numpy()
    differ = (table[CELL_TYPE].astype(str).to_numpy() != final).mean()
    assert differ <= check["share_cells_reembedded"] + 1e-9, (differ, check)


def test_nothing_is_published_without_a_listener_or_an_early_estimate(pbmc):
    ref, query = pbmc
    _, stages = _drive(iter_transfer(query, ref, LABEL, embedder=_surrogate()))
    assert STAGE_PROVISIONAL not in stages  # nobody listens: no extra kNN
    channel = ProvisionalChannel()
    with listening(channel):
        _, stages = _drive(iter_transfer(query, ref, LABEL, embedder=HashEmbedder()))
    assert STAGE_PROVISIONAL not in stages and channel.published == 0  # exact mode: no early estimate


# ---------------------------------------------------------------------------- the dock
def _job_by_mode(query, reference, label_key, top_k, model, k, metadata, device, mode, cache, root=None):
    """The dock's job with the hash embedder; ``mode`` from the dock's embedding form."""
    embedder = _surrogate() if mode == EMBED_MODE_SURROGATE else HashEmbedder()
    result = yield from iter_transfer(query, reference, label_key, top_k=top_k, k=k, metadata=metadata,
                                      embedder=embedder)
    return result


@pytest.mark.gui
def test_the_dock_shows_provisional_labels_then_the_final_ones(viewer, qtbot, demo_data, monkeypatch):
    from _dock_fixture import TRANSFER, load_demo

    from napari_cellama._qt import transfer_widget

    monkeypatch.setattr(transfer_widget, "transfer_job", _job_by_mode)
    dock = load_demo(viewer, qtbot, demo_data)[TRANSFER]
    dock.embedding.set_mode(EMBED_MODE_SURROGATE)
    assert dock.parameters()["mode"] == EMBED_MODE_SURROGATE and dock.parameters()["device"] == "auto"
    seen = []

    def on_step(value):
        if value[0] == STAGE_PROVISIONAL:  # runs after the view painted the provisional layer
            layer = viewer.layers[PROVISIONAL_LAYER] if PROVISIONAL_LAYER in viewer.layers else None
            seen.append((layer, dock.status.text(), "cell types" in viewer.layers, dock._cells().contour))

    dock.runner.progressed.connect(on_step)
    dock.run(sync=True)
    assert len(seen) == 1  # the check's labels from the surrogate vectors
    for layer, status, final_shown, contour in seen:
        assert layer is not None and not final_shown
        assert contour == 1  # the cells drawn as outlines over it, not hiding it
        assert "provisional" in status and "surrogate" in status
        assert layer.metadata["cellama"]["provisional"] is True
        assert np.asarray(layer.data[0] if layer.multiscale else layer.data).max() > 0  # cells painted
    # the final result replaced it
    assert PROVISIONAL_LAYER not in viewer.layers and "cell types" in viewer.layers
    assert dock.result.params[EMBED_MODE] == EMBED_MODE_SURROGATE
    assert "surrogate embedding" in dock.status.text()

    # exact ("default") mode: no provisional layer at all
    seen.clear()
    dock.embedding.set_mode(None)
    assert dock.parameters()["mode"] is None
    dock.run(sync=True, keep="discard")
    assert not seen and PROVISIONAL_LAYER not in viewer.layers


def _slow_after_provisional(*args, **kwargs):
    """:func:`_job_by_mode`, pausing at each step after the provisional labels (time to cancel)."""
    import time

    gen = _job_by_mode(*args, **kwargs)
    seen = False
    try:
        while True:
            step = next(gen)
            if seen:
                time.sleep(0.3)
            seen = seen or step[0] == STAGE_PROVISIONAL
            yield step
    except StopIteration as stop:
        return stop.value


@pytest.mark.gui
def test_a_cancelled_run_leaves_no_provisional_labels(viewer, qtbot, demo_data, monkeypatch):
    from _dock_fixture import TRANSFER, load_demo

    from napari_cellama._qt import transfer_widget

    monkeypatch.setattr(transfer_widget, "transfer_job", _slow_after_provisional)
    dock = load_demo(viewer, qtbot, demo_data)[TRANSFER]
    dock.embedding.set_mode(EMBED_MODE_SURROGATE)
    cells = dock._cells()
    style = (cells.contour, cells.opacity)
    dock.run()  # in a worker
    qtbot.waitUntil(lambda: PROVISIONAL_LAYER in viewer.layers, timeout=120_000)
    assert dock.runner.busy  # shown before the run ended
    dock.runner.cancel()
    qtbot.waitUntil(lambda: not dock.runner.busy, timeout=60_000)
    assert PROVISIONAL_LAYER not in viewer.layers and "cell types" not in viewer.layers
    assert (cells.contour, cells.opacity) == style  # the cells shown as before the run
    assert dock.session.transfer is None
