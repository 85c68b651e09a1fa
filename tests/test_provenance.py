"""Provenance as plain data (core/provenance.py): run steps with model and input fingerprints,
manual edits in order (undone ones left out, ones past the undo depth kept), the threshold; kept
through state()/from_state, snapshots and every export (fast, no model)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd

from napari_cellama._constants import CONFIDENCE, DISTANCE, LABEL_SOURCE, REVIEWED, TRANSFERRED_TYPE
from napari_cellama.core import Annotation, TransferResult
from napari_cellama.core.provenance import (
    annotation_from_result,
    content_fingerprint,
    describe,
    recorded_inputs,
)
from napari_cellama.io import load_session, write_cells_csv, write_explorer_csv, write_h5ad


def _result(n=40):
    rng = np.random.default_rng(1)
    t = pd.DataFrame({TRANSFERRED_TYPE: rng.choice(["B", "T"], n), CONFIDENCE: rng.random(n),
                      DISTANCE: rng.random(n)}, index=pd.Index([f"c{i}" for i in range(n)], name="cell_id"))
    params = {"method": "knn", "options": {"method": "knn", "top_k": 20, "k": 5, "metadata": ()},
              "label_key": "cell_type", "model": "no-such-model", "device": "cpu", "embedding_mode": "exact",
              "min_confidence": 0.0, "max_distance": None}
    return TransferResult(t, None, None, pd.Series(["B", "T", "NK"]), None, params)


def _files(tmp_path):
    q = tmp_path / "query.h5ad"
    r = tmp_path / "ref.h5ad"
    q.write_bytes(b"query bytes")
    r.write_bytes(b"reference bytes")
    return {"query": q, "reference": r, "label_key": "cell_type"}


def test_run_step_and_edits_in_order(tmp_path):
    inputs = _files(tmp_path)
    ann = annotation_from_result(_result(), inputs)
    assert "NK" in ann.types  # every reference label is registered
    ann.assign(["c1", "c2"], "Stromal", reason="polygon")
    ann.assign(["c3"], "gone", reason="polygon")
    ann.undo()
    ann.mark_reviewed(["c4"])
    ann.assign(["c5"], "T", reason="review", review=True)
    ann.set_threshold(0.25)
    steps = ann.provenance
    run = steps[0]
    assert run["step"] == "transfer" and run["method"] == "knn" and run["options"]["k"] == 5
    assert run["options"]["metadata"] == []  # plain data: tuples become lists
    assert run["model"] == {"name": "no-such-model", "fingerprint": None}
    assert run["inputs"]["query"] == {"path": str(inputs["query"].resolve()),
                                      "fingerprint": content_fingerprint(inputs["query"])}
    assert run["inputs"]["label_key"] == "cell_type" and run["time"] and run["package"].startswith("napari")
    edits = [s for s in steps if s["step"] == "edit"]
    assert [(e["kind"], e["reason"], e["label"]) for e in edits] == [
        ("assign", "polygon", "Stromal"), ("review", "review", None), ("assign", "review", "T")]
    assert edits[0]["cell_ids"] == ["c1", "c2"] and edits[1]["keep_labels"] and edits[2]["review"]
    assert steps[-1] == {"step": "threshold", "min_confidence": 0.25, "max_distance": None}
    json.dumps(steps)  # plain data
    assert recorded_inputs(steps) == {"query": str(inputs["query"].resolve()),
                                      "reference": str(inputs["reference"].resolve()), "label_key": "cell_type"}
    lines = describe(steps)
    assert "transfer (knn)" in lines[0] and "2 cells -> Stromal (polygon)" in lines[1]


def test_edits_past_the_undo_depth_stay_in_the_provenance():
    ann = Annotation(_result().table, max_history=20)
    for i in range(25):
        ann.assign([f"c{i}"], f"type {i}", reason="polygon")
    assert ann.n_undo == 20
    labels = [s["label"] for s in ann.provenance if s["step"] == "edit"]
    assert labels == [f"type {i}" for i in range(25)]
    again = Annotation.from_state(ann.table, ann.state())  # a saved session keeps them
    assert [s["label"] for s in again.provenance if s["step"] == "edit"] == labels


def test_snapshot_is_independent(tmp_path):
    ann = annotation_from_result(_result(), _files(tmp_path))
    ann.assign(["c1"], "Stromal")
    snap = ann.snapshot()
    ann.assign(["c2"], "later")
    assert snap.cell_type["c2"] != "later" and snap.cell_type["c1"] == "Stromal"
    assert snap.provenance[:2] == ann.provenance[:2] and snap.n_undo == 1


def test_content_fingerprint(tmp_path):
    a = tmp_path / "a.h5ad"
    a.write_bytes(b"x" * 1000)
    fp = content_fingerprint(a)
    b = tmp_path / "b.h5ad"
    a.rename(b)
    assert content_fingerprint(b) == fp  # a moved / renamed file keeps its fingerprint
    b.write_bytes(b"y" * 1000)
    assert content_fingerprint(b) != fp
    assert content_fingerprint(tmp_path / "missing") is None
    run = tmp_path / "xenium"
    run.mkdir()
    (run / "experiment.xenium").write_text("{}")
    (run / "cells.parquet").write_bytes(b"cells")
    fp_run = content_fingerprint(run)
    (run / "transcripts.parquet").write_bytes(b"not read by a transfer")
    assert content_fingerprint(run) == fp_run
    (run / "cells.parquet").write_bytes(b"other cells")
    assert content_fingerprint(run) != fp_run


def test_exports_carry_provenance_and_the_runs_inputs(tmp_path):
    inputs = _files(tmp_path)
    ann = annotation_from_result(_result(), inputs)
    ann.assign(["c1", "c2"], "Stromal", reason="cluster")
    ann.mark_reviewed(["c3"])
    # whatever is loaded now, the export records the inputs of the run that made the labels
    h5ad = write_h5ad(tmp_path / "out.h5ad", ann, inputs={"reference": "/somewhere/else.h5ad"})
    a = ad.read_h5ad(h5ad)
    assert json.loads(a.uns["cellama"]["inputs"])["reference"] == str(inputs["reference"].resolve())
    steps = json.loads(a.uns["cellama"]["provenance"])
    assert steps == json.loads(json.dumps(ann.provenance))
    assert a.obs.loc["c1", LABEL_SOURCE] == "manual:cluster" and a.obs.loc["c5", LABEL_SOURCE] == "transfer"
    assert bool(a.obs.loc["c3", REVIEWED]) and int(a.obs[REVIEWED].sum()) == 1
    saved = load_session(h5ad)
    assert saved.recorded_provenance == steps and saved.annotation.provenance[0]["step"] == "transfer"
    assert saved.annotation.label_source["c1"] == "manual:cluster" and saved.annotation.reviewed["c3"]
    csv = pd.read_csv(write_cells_csv(tmp_path / "cells.csv", ann), index_col="cell_id")
    assert csv.loc["c2", LABEL_SOURCE] == "manual:cluster" and bool(csv.loc["c3", REVIEWED])
    groups = pd.read_csv(write_explorer_csv(tmp_path / "groups.csv", ann))
    assert list(groups.columns) == ["cell_id", "group", "color"]  # the final label only
    assert groups.set_index("cell_id").loc["c1", "group"] == "Stromal"




def test_prototype_run_is_recorded(tmp_path):
    import scipy.sparse as sp
    from _hash_embedder import HashEmbedder

    from napari_cellama.core import annotate_by_prototypes

    genes = ["CD3E", "CD3D", "MS4A1", "CD79A", "LYZ", "CD14"]
    rng = np.random.default_rng(0)
    q = ad.AnnData(sp.csr_matrix(rng.poisson(2, (30, 6)).astype(np.float32)))
    q.var_names = genes
    q.obs_names = [f"c{i}" for i in range(30)]
    markers = {"T": ["CD3E", "CD3D"], "B": ["MS4A1", "CD79A"], "Mono": ["LYZ", "CD14"]}
    result = annotate_by_prototypes(q, markers, embedder=HashEmbedder())
    markers_file = tmp_path / "markers.json"
    markers_file.write_text(json.dumps(markers))
    ann = annotation_from_result(result, {"query": tmp_path / "q.h5ad", "markers": markers_file})
    run = ann.provenance[0]
    assert run["step"] == "prototypes" and run["options"]["top_k"] == result.options.top_k
    assert run["inputs"]["markers"]["fingerprint"] == content_fingerprint(markers_file)
    assert run["inputs"]["query"]["fingerprint"] is None  # not on disk: recorded by path only
    assert set(ann.types) >= {"T", "B", "Mono"}
    assert "prototypes" in describe(ann.provenance)[0]
