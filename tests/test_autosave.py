"""Auto-save (io/autosave.py): debounced, size-capped, atomic, and offered back after a crash.

The crash test starts a process that auto-saves an edited session and kills it with SIGKILL;
the session is then found and restored (labels, manual edits with their reasons, undo history,
threshold, provenance). The GUI test restores it in a real viewer through the dock's question.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_cellama._constants import CONFIDENCE, DISTANCE, TRANSFERRED_TYPE
from napari_cellama.core import Annotation
from napari_cellama.io.autosave import AutoSaver, discard_autosave, pending_autosave, restore_autosave

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _annotation(n=300):
    rng = np.random.default_rng(0)
    t = pd.DataFrame({TRANSFERRED_TYPE: rng.choice(["B", "T", "NK"], n), CONFIDENCE: rng.random(n),
                      DISTANCE: rng.random(n)}, index=[f"c{i}" for i in range(n)])
    ann = Annotation(t)
    ann.add_provenance({"step": "transfer", "method": "knn", "inputs": {}})
    ann.assign(ann.cell_ids[:20], "Stromal", reason="polygon")
    ann.mark_reviewed(ann.cell_ids[30:35])
    ann.set_threshold(0.2)
    return ann


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_debounce_atomic_and_discard(tmp_path):
    clock = Clock()
    saver = AutoSaver(tmp_path, min_interval=30, clock=clock)
    ann = _annotation()
    assert saver.save_if_due(ann) is None  # nothing changed yet
    saver.note_change()
    assert saver.save_if_due(ann) == saver.table_path and saver.table_path.is_file()
    saver.note_change()
    clock.t += 10
    assert saver.save_if_due(ann) is None and saver.seconds_until_due() == pytest.approx(20)
    clock.t += 20
    assert saver.save_if_due(ann) is not None and saver.n_saves == 2
    names = {p.name for p in tmp_path.iterdir()}  # the table and its manifest, no temporaries
    assert names == {saver.table_path.name, saver.manifest_path.name}
    assert pending_autosave(tmp_path) is None  # this process is alive: not a crash
    saver.discard()
    assert list(tmp_path.iterdir()) == []


def test_size_cap(tmp_path):
    saver = AutoSaver(tmp_path, max_bytes=1000)
    assert saver.save(_annotation()) is None
    assert "over the cap" in saver.last_error and list(tmp_path.iterdir()) == []


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_autosave import _annotation
    from napari_cellama.io.autosave import AutoSaver
    {body}
    print("saved", flush=True)
    time.sleep(120)
""")


def _crash(folder: Path, body: str) -> None:
    code = CHILD.format(tests=str(Path(__file__).parent), body=body)
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "saved"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_autosave_survives_sigkill(tmp_path):
    _crash(tmp_path, f"ann = _annotation(); AutoSaver({str(tmp_path)!r}, min_interval=0).save(ann)")
    info = pending_autosave(tmp_path)
    assert info is not None and info["n_cells"] == 300 and info["n_manual"] == 20
    saved = restore_autosave(info)
    exp = _annotation()
    got = saved.annotation
    assert (got.cell_type.astype(str) == exp.cell_type.astype(str)).all()
    assert (got.label_source == exp.label_source).all() and (got.reviewed == exp.reviewed).all()
    assert got.min_confidence == 0.2 and got.n_undo == exp.n_undo
    assert got.provenance[0]["method"] == "knn"
    assert [s["reason"] for s in got.provenance if s["step"] == "edit"] == ["polygon", "review"]
    got.undo()  # the undo history came back too
    assert got.reviewed.sum() == 0
    discard_autosave(info)
    assert pending_autosave(tmp_path) is None


def test_clean_exit_leaves_nothing_to_restore(tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_autosave import _annotation; "
            f"from napari_cellama.io.autosave import AutoSaver; s = AutoSaver({str(tmp_path)!r}); "
            f"s.save(_annotation()); s.discard()")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=SRC), timeout=120)
    assert pending_autosave(tmp_path) is None
