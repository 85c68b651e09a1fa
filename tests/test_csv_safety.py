"""Formula injection (issue 13 item 17): text that a spreadsheet would run is neutralised."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from napari_cellama.core import Annotation
from napari_cellama.io import write_cells_csv, write_explorer_csv
from napari_cellama.io.csv_safety import neutralise, safe_for_spreadsheets, write_csv

HOSTILE = ["=HYPERLINK(\"http://x\",\"click\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tT", "\rB"]


def _table():
    ids = pd.Index(["=cell1", "cell2", "@cell3", "cell4", "cell5", "cell6"], name="cell_id")
    return pd.DataFrame({"transferred_type": HOSTILE, "cell_type": HOSTILE, "confidence": [1.0, -0.5, 0.5, 0.5, 0.5, 0.5],
                         "distance": [0.1] * 6, "runner_up": ["B", "=B", "T", "T", "T", "T"]}, index=ids)


def _cells(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def test_per_cell_csv_has_no_formula_cells(tmp_path):
    write_cells_csv(tmp_path / "c.csv", Annotation(_table()))
    cells = _cells(tmp_path / "c.csv")
    risky = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _is_number(c))]
    assert risky == []
    assert "'=HYPERLINK(\"http://x\",\"click\")" in cells and "'=cell1" in cells
    assert "-0.5" in cells  # numbers stay numbers


def _is_number(text) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_explorer_csv_keeps_cell_ids_and_neutralises_groups(tmp_path):
    write_explorer_csv(tmp_path / "e.csv", Annotation(_table()))
    df = pd.read_csv(tmp_path / "e.csv", dtype=str, keep_default_na=False)
    assert df["cell_id"].tolist()[0] == "=cell1"  # Explorer matches ids verbatim
    assert all(not g.startswith(("=", "+", "-", "@")) for g in df["group"])


@pytest.mark.parametrize("value", HOSTILE)
def test_neutralise(value):
    assert neutralise(value) == "'" + value and neutralise("B cell") == "B cell" and neutralise(-1.0) == -1.0


def test_write_csv_used_by_the_cli_is_safe(tmp_path):
    write_csv(tmp_path / "t.csv", pd.DataFrame({"cell_type": ["=1+1"]}, index=pd.Index(["+id"], name="cell_id")))
    assert _cells(tmp_path / "t.csv") == ["cell_id", "cell_type", "'+id", "'=1+1"]
    assert safe_for_spreadsheets(pd.DataFrame({"n": [-1]}))["n"].tolist() == [-1]
