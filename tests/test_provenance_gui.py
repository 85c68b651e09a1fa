"""The transfer dock in a real viewer: each run records its own inputs (provenance), exports record
the inputs of the run that made the labels even after another reference is loaded (issue 17 item 5),
saving runs off the GUI thread (issue 17 item 4), "Export as script", and an auto-save left by a
killed process is offered back and restored (issue 16). Real model on the 150-cell demo subset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import pytest
from _transfer_fixture import DEMO_LABEL_KEY, cellama_tmp, transfer  # noqa: F401 - pytest fixtures

from napari_cellama.session import get_session

PLUGIN = "napari-cellama"
TIMEOUT = 300_000
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _load(viewer, qtbot, xenium, reference):
    _, load = viewer.window.add_plugin_dock_widget(PLUGIN, "1. Load Xenium and reference")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export", tabify=True)
    with qtbot.waitSignal(load.columns_ready, timeout=TIMEOUT):
        load.set_reference_path(reference, DEMO_LABEL_KEY)
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    load.set_xenium_path(xenium)
    with qtbot.waitSignal(load.loaded, timeout=TIMEOUT):
        load.load()
    qtbot.waitUntil(lambda: not load.busy, timeout=TIMEOUT)
    return widget


@pytest.mark.gui
def test_dock_provenance_async_save_and_script(viewer, qtbot, transfer, tmp_path):  # noqa: F811
    from napari_cellama.io import load_session

    _result, _query, paths = transfer
    widget = _load(viewer, qtbot, paths["xenium"], paths["reference"])
    widget.run(sync=True)
    ann = widget.annotation
    run = ann.provenance[0]
    assert run["step"] == "transfer" and run["inputs"]["label_key"] == DEMO_LABEL_KEY
    assert run["inputs"]["reference"]["path"] == str(Path(paths["reference"]).resolve())
    assert run["inputs"]["query"]["fingerprint"] and run["model"]["fingerprint"]
    ann.assign(ann.cell_ids[:12], "Stromal (manual)", reason="polygon")

    # another reference loaded after the run: exports still record the run's own inputs
    get_session(viewer).update(reference_path=tmp_path / "another_reference.h5ad")
    h5ad = widget.export_h5ad(tmp_path / "cells.h5ad")
    uns = ad.read_h5ad(h5ad).uns["cellama"]
    assert json.loads(uns["inputs"])["reference"] == str(Path(paths["reference"]).resolve())
    steps = json.loads(uns["provenance"])
    assert steps[0]["inputs"]["reference"]["path"] == str(Path(paths["reference"]).resolve())
    assert steps[1]["reason"] == "polygon" and steps[1]["n_cells"] == 12

    # save off the GUI thread: returns at once, the zarr appears whole when the worker is done
    expected = ann.cell_type.astype(str).copy()
    target = tmp_path / "session.zarr"
    t0 = time.perf_counter()
    worker = widget.save_session(target, background=True)
    returned_in = time.perf_counter() - t0
    assert worker is not None and widget.runner.busy
    ann.assign(ann.cell_ids[20:25], "edited while saving", reason="manual")  # not in the snapshot
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=TIMEOUT)
    print(f"\nsave_session(background=True) returned in {returned_in:.3f} s")
    assert returned_in < 1.0
    assert widget.runner.last_error is None and Path(widget.last_saved) == target.resolve()
    saved = load_session(target)
    assert (saved.annotation.cell_type.astype(str).reindex(expected.index) == expected).all()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name] == []

    # export as script: a readable script of the run and the edits
    script = widget.export_script(tmp_path / "remake.py")
    text = Path(script).read_text()
    compile(text, str(script), "exec")
    assert "run_transfer(" in text and "'Stromal (manual)'" in text and "'edited while saving'" in text

    # the auto-save of this session is written in the background
    widget.autosave.save_now(wait=True)
    assert widget.autosave.saver.table_path.is_file() and widget.autosave.saver.last_error is None


CHILD = textwrap.dedent("""
    import time
    from napari_cellama.io import load_session
    from napari_cellama.io.autosave import AutoSaver
    saved = load_session({export!r})
    ann = saved.annotation
    ann.assign(ann.cell_ids[40:50], "Crash survivor", reason="review", review=True)
    AutoSaver(min_interval=0).save(ann, saved.transfer_result(), saved.inputs)
    print("saved", flush=True)
    time.sleep(120)
""")


@pytest.mark.gui
def test_autosave_of_a_killed_session_is_offered_back(make_napari_viewer, qtbot, transfer, tmp_path):  # noqa: F811
    from napari_cellama.core.provenance import annotation_from_result
    from napari_cellama.io import write_h5ad
    from napari_cellama.io.autosave import pending_autosave

    result, query, paths = transfer
    ann = annotation_from_result(result, {"query": paths["xenium"], "reference": paths["reference"],
                                          "label_key": DEMO_LABEL_KEY})
    export = write_h5ad(tmp_path / "export.h5ad", ann, result, query=query)
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(export=str(export))], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=SRC))
    try:
        assert proc.stdout.readline().strip() == "saved"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert pending_autosave() is not None

    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "2. Transfer, review and export")
    hook = widget.autosave
    assert hook.banner is not None and hook.banner.isVisibleTo(widget)
    assert "Restore the auto-saved session from" in hook.banner_label.text()
    hook.restore_button.click()  # opens the recorded Xenium run and shows the session
    restored = widget.annotation
    assert restored is not None and "cell types" in [layer.name for layer in viewer.layers]
    assert (restored.cell_type.loc[ann.cell_ids[40:50]] == "Crash survivor").all()
    assert (restored.label_source.loc[ann.cell_ids[40:50]] == "manual:review").all()
    assert restored.reviewed.sum() == 10 and restored.provenance[0]["step"] == "transfer"
    assert hook.banner.isHidden() and pending_autosave() is None
