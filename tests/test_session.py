"""The viewer session (Qt-free): evented fields, the shared cell selection, clearing."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from napari_cellama.session import (
    CellamaSession,
    CellSelection,
    NicheState,
    TransferState,
    get_session,
)


def test_fields_emit_their_own_signal():
    s = CellamaSession()
    seen = []
    for name in ("inputs", "transfer", "niche", "prototypes", "finetuned_model"):
        getattr(s.events, name).connect(lambda *v, name=name: seen.append((name, *v)))
    s.update(top_k=20, label_key="cell_type")
    state = TransferState(None, "annotation")
    s.transfer = state
    s.finetuned_model = "/models/tuned"
    assert seen == [("inputs",), ("transfer", state), ("finetuned_model", "/models/tuned")]
    assert s.annotation == "annotation" and s.top_k == 20
    with pytest.raises(AttributeError, match="no input 'transfer'"):
        s.update(transfer=None)  # results are set one by one, with their own signal
    seen.clear()
    s.niche = NicheState(None, pd.Series(dtype=object), {})
    s.clear()
    assert [e[0] for e in seen] == ["niche", "transfer", "niche", "prototypes", "finetuned_model", "inputs"]
    assert s.transfer is None and s.top_k is None and s.layer_names == {}


def test_cell_selection_is_shared_and_emits_on_change_only():
    sel = CellSelection()
    seen = []
    sel.changed.connect(seen.append)
    sel.select(["c2", "c1", "c1"])
    assert list(sel.ids) == ["c2", "c1"] and sel.ids.name == "cell_id"
    sel.select([5], add=True)
    assert set(sel.ids) == {"c1", "c2", "5"} and len(sel) == 3
    sel.select(sel.ids)  # the same cells: no signal
    sel.clear()
    assert len(seen) == 3 and len(seen[-1]) == 0


def test_one_session_per_viewer_object():
    class Viewer:  # any weak-referenceable object stands for a viewer
        pass

    a, b = Viewer(), Viewer()
    assert get_session(a) is get_session(a) is not get_session(b)
    assert get_session(Viewer(), create=False) is None


def test_session_imports_neither_qt_nor_napari():
    code = ("import sys, napari_cellama.session; "
            "print(any(m.split('.')[0] in ('qtpy', 'napari', 'PyQt5', 'PySide2', 'PyQt6', 'PySide6') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
