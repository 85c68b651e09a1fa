"""The demo run loaded in a real viewer through the load dock, and a fast transfer job.

:func:`fake_transfer_job` is the transfer dock's job with the hash embedder of
:mod:`_hash_embedder` (the dock tests check the GUI flow, not the model); ``delay`` seconds
are spent at each progress step so a test can act while a run is in flight.
"""

from __future__ import annotations

import time

from _hash_embedder import HashEmbedder

PLUGIN = "napari-cellama"
LOAD = "1. Load Xenium and reference"
TRANSFER = "2. Transfer, review and export"
NICHES = "3. Niche clusters"
TIMEOUT = 120_000


def fake_transfer_job(query, reference, label_key, top_k, model, k, metadata, device, mode, cache, root=None, delay=0.0):
    from napari_cellama.core import iter_transfer

    gen = iter_transfer(query, reference, label_key, top_k=top_k, k=k, metadata=metadata,
                        embedder=HashEmbedder())
    try:
        while True:
            step = next(gen)
            if delay:
                time.sleep(delay)
            yield step
    except StopIteration as stop:
        return stop.value


def use_fake_transfer(monkeypatch, delay: float = 0.0) -> None:
    """Make the transfer dock run :func:`fake_transfer_job`."""
    from functools import partial

    from napari_cellama._qt import transfer_widget

    monkeypatch.setattr(transfer_widget, "transfer_job", partial(fake_transfer_job, delay=delay))


def load_demo(viewer, qtbot, demo, docks=(LOAD, TRANSFER)):
    """Open ``docks`` (as the Plugins menu does) and load the demo run and reference."""
    widgets = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in docks}
    load = widgets[LOAD]
    with qtbot.waitSignal(load.columns_ready, timeout=TIMEOUT):
        load.set_reference_path(demo.reference_h5ad, "cell_type")
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    load.set_xenium_path(demo.xenium_dir)
    with qtbot.waitSignal(load.loaded, timeout=TIMEOUT):
        load.load()
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    return widgets
