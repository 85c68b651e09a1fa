"""``napari-cellama replay`` of exports made from marker-prototype labels and from a transfer
combined with prototype labels (real model, the demo subset of 150 cells): the labels, their
sources and review flags are re-made exactly, including the manual edits made on the transfer
before combining, on the combination, and the threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _transfer_fixture import DEMO_LABEL_KEY, cellama_tmp, transfer  # noqa: F401 (fixtures)

from napari_cellama._constants import CELL_TYPE, LABEL_SOURCE, REVIEWED, UNKNOWN
from napari_cellama.cli import main
from napari_cellama.core.provenance import annotation_from_result
from napari_cellama.core.run_annotations import combined_annotation, prototype_annotation
from napari_cellama.io import write_h5ad

_PROTO: dict = {}


def _prototypes(query):
    from napari_cellama.core import PrototypeOptions, annotate_by_prototypes

    if "p" not in _PROTO:
        _PROTO["p"] = annotate_by_prototypes(query, None, PrototypeOptions(top_k=5, min_confidence=0.05))
    return _PROTO["p"]


def _compare(csv_path, ann) -> None:
    got = pd.read_csv(csv_path, index_col="cell_id", keep_default_na=False)
    got.index = got.index.astype(str)
    exp = ann.table
    assert list(got.index) == list(exp.index)
    for col in (CELL_TYPE, LABEL_SOURCE):
        assert (got[col].astype(str) == exp[col].astype(str)).all(), col
    assert (got[REVIEWED].astype(str).str.lower() == exp[REVIEWED].astype(str).str.lower()).all()


def test_replay_of_prototype_labels_with_edits(transfer, tmp_path, capsys):  # noqa: F811
    result, query, paths = transfer
    proto = _prototypes(query)
    ann = prototype_annotation(proto, {"query": paths["xenium"]})
    ids = ann.cell_ids
    ann.assign(ids[5:15], "Stromal (checked)", reason="polygon")
    ann.mark_reviewed(ids[20:23], reason="review")
    ann.set_threshold(0.2)
    steps = ann.provenance
    assert [s["step"] for s in steps][:1] == ["prototypes"] and steps[0]["params"]["markers"]
    h5ad = write_h5ad(tmp_path / "proto.h5ad", ann, None, query=query)
    out = tmp_path / "replayed.csv"
    assert main(["replay", str(h5ad), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "labels identical to the export's" in err and "prototypes" in err
    _compare(out, ann)
    assert (pd.read_csv(out)[LABEL_SOURCE] == "prototypes").sum() > 50


@pytest.mark.parametrize("where", ["unknown", "unassigned"])
def test_replay_of_a_transfer_combined_with_prototypes(where, transfer, tmp_path, capsys):  # noqa: F811
    result, query, paths = transfer
    if where == "unknown":  # a transfer that calls some cells Unknown (level 0.5; the demo has none at 0.05)
        from napari_cellama.core import TransferOptions, run_transfer
        from napari_cellama.io import read_reference

        result = run_transfer(query, read_reference(paths["reference"]), DEMO_LABEL_KEY,
                              options=TransferOptions(k=5, unknown_alpha=0.5))
        assert (result.table[CELL_TYPE] == UNKNOWN).any()
    proto = _prototypes(query)
    inputs = {"query": paths["xenium"], "reference": paths["reference"], "label_key": DEMO_LABEL_KEY}
    base = annotation_from_result(result, inputs)
    ids = base.cell_ids
    base.assign(ids[:8], "Stromal (manual)", reason="polygon")  # an edit on the transfer before combining
    base.set_threshold(0.6)  # "unassigned" also takes cells below this confidence
    comb = combined_annotation(base, proto, where, method=result.params["method"], inputs={"query": paths["xenium"]})
    n_proto = int((comb.label_source == "prototypes").sum())
    assert n_proto > 0 and (comb.cell_type[ids[:8]] == "Stromal (manual)").all()
    comb.assign(ids[30:35], UNKNOWN, reason="review", review=True)
    comb.mark_reviewed(ids[40:42], reason="review")
    comb.set_threshold(0.1)
    kinds = [s["step"] for s in comb.provenance]
    assert kinds[:4] == ["transfer", "edit", "prototypes", "combine"] and kinds[-1] == "threshold"
    h5ad = write_h5ad(tmp_path / "combined.h5ad", comb, result, query=query)
    out = tmp_path / "replayed.csv"
    script = tmp_path / "remake.py"
    assert main(["replay", str(h5ad), "--out", str(out), "--script", str(script)]) == 0
    assert "labels identical to the export's" in capsys.readouterr().err
    _compare(out, comb)
    assert (pd.read_csv(out)[LABEL_SOURCE] == "prototypes").sum() == int((comb.label_source == "prototypes").sum())
    text = script.read_text()
    assert "combined_annotation(annotation, prototypes" in text and "annotate_by_prototypes(" in text
    if where == "unassigned":  # the script re-makes the same labels
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        _compare(out, comb)
