"""Make docs/images/provenance_*.png: the crash-recovery question and the restored session.

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/provenance_screenshots.py [EMBEDDING_CACHE]

The real bone-marrow crop (4,595 cells) labelled from the pbmc3k reference (default method), a
polygon edit and a review decision, auto-saved by a process that then "crashed" (an auto-save
whose process is gone); a new viewer's transfer dock offers it back and restores it.
``EMBEDDING_CACHE``: a warm embedding-cache folder (e.g. /work/cache/embeddings) to skip embedding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
CROP = DATA / "xenium_bone_marrow_crop"
PBMC3K = DATA / "references" / "pbmc3k" / "pbmc3k.h5ad"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_autosave(cache) -> None:
    from napari_cellama.core import run_transfer
    from napari_cellama.core.embedding_options import make_embedder
    from napari_cellama.core.provenance import annotation_from_result
    from napari_cellama.io import read_query, read_reference
    from napari_cellama.io.autosave import AutoSaver

    query, reference = read_query(CROP), read_reference(PBMC3K)
    result = run_transfer(query, reference, "cell_type", embedder=make_embedder(cache=cache or True))
    ann = annotation_from_result(result, {"query": CROP, "reference": PBMC3K, "label_key": "cell_type"})
    xy = query.obsm["spatial"]
    x0, y0 = xy.min(axis=0)
    inside = (xy[:, 0] < x0 + 150) & (xy[:, 1] < y0 + 150)
    ann.assign(query.obs_names[inside], "Erythroid (manual)", reason="polygon")
    ann.assign(query.obs_names[500:501], "CD14+ Mono", reason="review", review=True)
    saver = AutoSaver(min_interval=0)
    saver.pid = _dead_pid()  # as if the process that wrote it had crashed
    saver.save(ann, result, {"query": CROP, "reference": PBMC3K})


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    os.environ.setdefault("NAPARI_CELLAMA_CACHE", tempfile.mkdtemp(prefix="cellama-shots-"))
    make_autosave(sys.argv[1] if len(sys.argv) > 1 else None)
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellama", "2. Transfer, review and export")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    out = HERE / "images"
    viewer.screenshot(str(out / "provenance_restore_question.png"), canvas_only=False)
    widget.autosave.restore_button.click()
    for _ in range(40):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(out / "provenance_restored.png"), canvas_only=False)
    print("\n".join(__import__("napari_cellama.core.provenance", fromlist=["describe"]).describe(
        widget.annotation.provenance)))
    viewer.close()


if __name__ == "__main__":
    main()
