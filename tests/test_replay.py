"""``napari-cellama replay`` and "Export as script": an export's labels are re-made exactly from its
recorded steps (real model, the demo subset of 150 cells), including manual edits from a polygon-like
assign and a review accept / reassign; moved, missing and changed inputs get clear errors (exit 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _transfer_fixture import DEMO_LABEL_KEY, cellama_tmp, transfer  # noqa: F401 (fixtures)

from napari_cellama._constants import CELL_TYPE, LABEL_SOURCE, REVIEWED
from napari_cellama.cli import main
from napari_cellama.core.provenance import annotation_from_result
from napari_cellama.io import write_h5ad
from napari_cellama.io.replay import write_replay_script


def _edited(result, inputs):
    """An annotation of ``result`` with the edits a reviewer makes: a polygon, an accepted and a
    reassigned cell in the review queue, an undone edit, a threshold."""
    ann = annotation_from_result(result, inputs)
    ids = ann.cell_ids
    ann.assign(ids[10:40], "Stromal (manual)", reason="polygon")
    ann.mark_reviewed(ids[50:55], reason="review")  # review queue: accept
    other = [t for t in ann.types if t != str(ann.cell_type.iloc[60])][0]
    ann.assign(ids[60:62], other, reason="review", review=True)  # review queue: reassign
    ann.assign(ids[20:25], "B cell (cluster)", reason="cluster")
    ann.assign(ids[100:110], "undone", reason="polygon")
    ann.undo()  # not in effect: not replayed
    ann.set_threshold(0.3)
    return ann


def _compare(csv_path: Path, ann) -> None:
    got = pd.read_csv(csv_path, index_col="cell_id", keep_default_na=False)
    got.index = got.index.astype(str)
    exp = ann.table
    assert list(got.index) == list(exp.index)
    assert (got[CELL_TYPE].astype(str) == exp[CELL_TYPE].astype(str)).all()
    assert (got[LABEL_SOURCE].astype(str) == exp[LABEL_SOURCE].astype(str)).all()
    assert (got[REVIEWED].astype(str).str.lower() == exp[REVIEWED].astype(str).str.lower()).all()


@pytest.fixture(scope="module")
def exported(transfer, tmp_path_factory):  # noqa: F811
    result, query, paths = transfer
    root = tmp_path_factory.mktemp("replay")
    inputs = {"query": paths["xenium"], "reference": paths["reference"], "label_key": DEMO_LABEL_KEY}
    ann = _edited(result, inputs)
    h5ad = write_h5ad(root / "export.h5ad", ann, result, query=query)
    return ann, result, query, paths, h5ad, root


def test_provenance_of_the_export(exported):
    import json

    import anndata as ad

    ann, result, _query, paths, h5ad, _root = exported
    steps = json.loads(ad.read_h5ad(h5ad).uns["cellama"]["provenance"])
    run = steps[0]
    assert run["step"] == "transfer" and run["method"] == result.params["method"]
    assert run["model"]["name"] == result.params["model"] and len(run["model"]["fingerprint"]) == 16
    assert run["inputs"]["reference"]["path"] == str(Path(paths["reference"]).resolve())
    assert len(run["inputs"]["query"]["fingerprint"]) == 16 and run["inputs"]["label_key"] == DEMO_LABEL_KEY
    assert run["options"]["k"] == result.params["k"] and run["package"].startswith("napari-cellama")
    edits = [s for s in steps if s["step"] == "edit"]
    assert [e["reason"] for e in edits] == ["polygon", "review", "review", "cluster"]  # the undone one is not there
    assert edits[1]["keep_labels"] and edits[2]["review"] and edits[0]["n_cells"] == 30
    assert steps[-1] == {"step": "threshold", "min_confidence": 0.3, "max_distance": None}
    obs = ad.read_h5ad(h5ad).obs
    assert (obs.loc[ann.cell_ids[10:20], LABEL_SOURCE] == "manual:polygon").all()
    assert obs[REVIEWED].sum() == 7


def test_replay_reproduces_labels_with_manual_edits(exported, tmp_path, capsys):
    ann, *_rest = exported
    h5ad = exported[4]
    out = tmp_path / "replayed.csv"
    script = tmp_path / "steps.py"
    assert main(["replay", str(h5ad), "--out", str(out), "--script", str(script)]) == 0
    err = capsys.readouterr().err
    assert "labels identical to the export's" in err and "4 manual edit(s)" in err
    _compare(out, ann)
    assert "annotation.assign(" in script.read_text()


def test_replay_of_a_zarr_export(exported, tmp_path):
    from napari_cellama.io import write_spatialdata

    ann, result, query, *_ = exported
    zarr = write_spatialdata(tmp_path / "session.zarr", ann, result, query=query, include_reference=False)
    out = tmp_path / "replayed.csv"
    assert main(["replay", str(zarr), "--out", str(out)]) == 0
    _compare(out, ann)


def test_moved_missing_and_changed_inputs(exported, tmp_path, capsys):
    ann, result, query, paths, _h5ad, _root = exported
    moved = tmp_path / "moved_reference.h5ad"
    shutil.copy(paths["reference"], moved)
    inputs = {"query": paths["xenium"], "reference": moved, "label_key": DEMO_LABEL_KEY}
    ann2 = _edited(result, inputs)
    h5ad = write_h5ad(tmp_path / "export.h5ad", ann2, result, query=query)
    moved.unlink()
    out = tmp_path / "out.csv"
    assert main(["replay", str(h5ad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing" in err and "--reference" in err
    # a changed file: refused, unless --allow-changed
    changed = tmp_path / "changed.h5ad"
    import anndata as ad

    ref = ad.read_h5ad(paths["reference"])
    ref[: ref.n_obs - 3].copy().write_h5ad(changed)
    assert main(["replay", str(h5ad), "--out", str(out), "--reference", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "changed since the run" in err and "--allow-changed" in err
    # pointing at the moved file (same content) replays exactly
    assert main(["replay", str(h5ad), "--out", str(out), "--reference", str(paths["reference"])]) == 0
    _compare(out, ann2)


@pytest.mark.parametrize("case", ["missing", "not_an_export", "no_provenance"])
def test_bad_exports_are_one_line_exit_2(case, exported, tmp_path, capsys):
    import anndata as ad

    if case == "missing":
        path = tmp_path / "nope.h5ad"
    elif case == "not_an_export":
        path = tmp_path / "plain.h5ad"
        ad.AnnData(obs=pd.DataFrame(index=["a", "b"])).write_h5ad(path)
    else:
        a = ad.read_h5ad(exported[4])
        del a.uns["cellama"]["provenance"]
        path = tmp_path / "old.h5ad"
        a.write_h5ad(path)
    assert main(["replay", str(path), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("napari-cellama: error:")


def test_export_as_script_runs_and_reproduces(exported, tmp_path):
    ann = exported[0]
    out = tmp_path / "labels.csv"
    script = write_replay_script(tmp_path / "remake.py", ann, str(out))
    text = script.read_text()
    assert "run_transfer(" in text and "reason='polygon'" in text and "mark_reviewed(" in text
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _compare(out, ann)


def test_a_run_recorded_before_the_coclustering_evidence_replays_without_it():
    from napari_cellama.io.replay import transfer_options

    old = {"options": {"method": "ensemble", "top_k": 20, "unknown_alpha": 0.05}}  # no unknown_coclustering key
    assert transfer_options(old).unknown_coclustering is False  # off when that run was made
    new = {"options": {"method": "ensemble", "unknown_coclustering": True}}
    assert transfer_options(new).unknown_coclustering is True
