"""Marker tables, prototype sentences and reference-free annotation (real model, real PBMCs)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from napari_cellama._constants import (
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    RUNNER_UP,
    SIMILARITY_GAP,
    UNASSIGNED,
)
from napari_cellama.cli import main
from napari_cellama.core import (
    PrototypeOptions,
    annotate_by_prototypes,
    cell_sentences,
    default_markers_path,
    marker_sentences,
    read_markers,
    restrict_markers,
    scaled_expression,
)
from napari_cellama.core.prototypes import assign_to_prototypes, prototype_cell_matrix
from napari_cellama.io import expression_for_sentences
from napari_cellama.validators import CellamaInputError

EXPECTED = {"B cell": ["MS4A1", "CD79A", "CD19"], "NK cell": ["GNLY", "NKG7"], "T cell": ["CD3E"]}

# default-table type -> pbmc68k bulk_labels name (the same mapping as benchmarks/finetune_pbmc.py)
PBMC_TYPES = {
    "CD14+ monocyte": "CD14+ Monocyte",
    "dendritic cell": "Dendritic",
    "B cell": "CD19+ B",
    "regulatory T cell": "CD4+/CD25 T Reg",
    "CD8+ cytotoxic T cell": "CD8+ Cytotoxic T",
    "naive CD8+ T cell": "CD8+/CD45RA+ Naive Cytotoxic",
    "NK cell": "CD56+ NK",
    "memory CD4+ T cell": "CD4+/CD45RO+ Memory",
    "CD34+ progenitor": "CD34+",
    "naive CD4+ T cell": "CD4+/CD45RA+/CD25- Naive T",
}


# --------------------------------------------------------------------------- parsing
def test_csv_json_gmt_give_the_same_markers(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text(
        "# a comment line\n"
        "Cell_Type,Gene,source\n"
        "B cell,MS4A1,x\n B cell , CD79A ,y\nB cell,CD19,\nB cell,ms4a1,dup\n"  # white space, case duplicate
        "NK cell,GNLY,\nNK cell,NKG7,\nT cell,CD3E,\n,CD4,\n"  # a row without a type is ignored
    )
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"B cell": ["MS4A1", "CD79A", "CD19"], "NK cell": ["GNLY", "NKG7", ""], "T cell": ["CD3E"]}))
    gmt = tmp_path / "m.gmt"
    gmt.write_text("B cell\tna\tMS4A1\tCD79A\tCD19\nNK cell\tdesc\tGNLY\tNKG7\nT cell\t\tCD3E\n")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("cell_type\tgene\nB cell\tMS4A1\nB cell\tCD79A\nB cell\tCD19\nNK cell\tGNLY\nNK cell\tNKG7\nT cell\tCD3E\n")
    for path in (csv, js, gmt, tsv):
        m = read_markers(path)
        assert m == EXPECTED, path.name
        assert list(m) == list(EXPECTED)  # file order kept


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.csv", "type,symbol\nB,MS4A1\n", "cell_type and gene"),
        ("bad.json", json.dumps(["MS4A1", "CD19"]), "JSON object"),
        ("bad2.json", "{not json", "not valid JSON"),
        ("bad.gmt", "B cell MS4A1 CD19\n", "not GMT"),
        ("empty.csv", "cell_type,gene\n", "no cell type"),
        ("markers.xlsx", "x", "should end with"),
    ],
)
def test_bad_marker_files_say_what_to_do(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(CellamaInputError, match=message):
        read_markers(p)


def test_missing_marker_file(tmp_path):
    with pytest.raises(CellamaInputError, match="not found"):
        read_markers(tmp_path / "nope.csv")


def test_default_table_ships_and_covers_pbmc_stromal_epithelial():
    path = default_markers_path()
    assert path.is_file() and path.parent.name == "data"
    assert (path.parent / "README.md").is_file()  # the sources
    m = read_markers("default")
    assert m == read_markers(None) == read_markers(path)
    for t in list(PBMC_TYPES) + ["fibroblast", "endothelial cell", "epithelial cell", "smooth muscle cell",
                                 "mast cell", "plasma cell", "macrophage", "neutrophil", "erythroid cell",
                                 "megakaryocyte"]:
        assert t in m and len(m[t]) >= 5, t
    table = pd.read_csv(path, comment="#")
    assert list(table.columns) == ["cell_type", "gene", "source"]
    assert table["source"].notna().all()  # every row cites where it comes from
    header = path.read_text().split("cell_type,gene")[0]
    for ref in ("Hao", "PanglaoDB", "CellMarker 2.0", "Tabula Sapiens"):
        assert ref in header


# --------------------------------------------------------------------------- panel and sentences
def test_restrict_markers_reports_dropped_genes_and_empty_types():
    markers = {"B cell": ["MS4A1", "CD19", "cd79a"], "HSC": ["CD34", "PROM1"], "NK cell": ["GNLY"]}
    ms = restrict_markers(markers, ["ms4a1", " CD79A", "GNLY", "LYZ"])
    assert ms.markers == {"B cell": ["ms4a1", "CD79A"], "NK cell": ["GNLY"]}  # the panel's spelling
    assert ms.dropped == {"B cell": ["CD19"], "HSC": ["CD34", "PROM1"], "NK cell": []}
    assert ms.empty_types == ["HSC"]
    assert ms.n_dropped == 3 and ms.n_kept == 3
    text = ms.summary()
    assert "3 markers not in the panel" in text and "CD19" in text and "HSC" in text
    with pytest.raises(CellamaInputError, match="none of the"):
        restrict_markers({"HSC": ["CD34"]}, ["LYZ"])


def test_marker_sentences_use_the_cell_sentence_format():
    s = marker_sentences({"a": ["X"], "b": ["X", "Y"], "c": ["X", "Y", "Z"], "d": ["Y", "Z", "X", "W"]})
    assert s == {
        "a": "Top gene is X.",
        "b": "Top genes are X and Y.",
        "c": "Top genes are X, Y, and Z.",
        "d": "Top genes are Y, Z, X, and W.",
    }
    assert marker_sentences({"d": ["Y", "Z", "X", "W"]}, max_markers=2) == {"d": "Top genes are Y and Z."}
    # identical to the sentence of a cell whose top genes are the markers, in that order
    x = np.array([[3.0, 2.0, 1.0]])
    assert cell_sentences(x, ["CD14", "LYZ", "S100A8"], 20)[0] == marker_sentences({"m": ["CD14", "LYZ", "S100A8"]})["m"]


def test_assignment_confidence_is_the_softmax_at_the_winner():
    proto = np.eye(3, dtype=np.float32)
    cells = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
    table, sim = assign_to_prototypes(cells, proto, ["A", "B", "C"], temperature=0.1, index=["c1", "c2", "c3"])
    assert list(table[CELL_TYPE]) == ["A", "C", "A"]  # the tie in c3 goes to the first type
    assert list(table[RUNNER_UP]) == ["B", "A", "B"]
    expected = np.exp(sim / 0.1) / np.exp(sim / 0.1).sum(axis=1, keepdims=True)
    assert np.allclose(table[CONFIDENCE], expected.max(axis=1), atol=1e-6)
    assert np.allclose(table[DISTANCE], 1 - sim.max(axis=1), atol=1e-6)
    assert np.allclose(table[SIMILARITY_GAP], np.sort(sim, axis=1)[:, -1] - np.sort(sim, axis=1)[:, -2], atol=1e-6)
    assert table.loc["c3", CONFIDENCE] == pytest.approx(expected[2].max())
    t2, _ = assign_to_prototypes(cells, proto, ["A", "B", "C"], temperature=0.1, min_confidence=0.6)
    assert (t2[CELL_TYPE] == UNASSIGNED).sum() == 1 and t2[CELL_TYPE].iloc[2] == UNASSIGNED
    with pytest.raises(CellamaInputError, match="temperature"):
        assign_to_prototypes(cells, proto, ["A", "B", "C"], temperature=0)


# --------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def pbmc_subset():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    _, idx = train_test_split(np.arange(adata.n_obs), test_size=200, stratify=adata.obs["bulk_labels"],
                              random_state=0)
    return adata[np.sort(idx)].copy()


def test_reference_free_annotation_of_pbmc_beats_majority_class(pbmc_subset):
    table = read_markers(None)
    markers = {PBMC_TYPES[t]: table[t] for t in PBMC_TYPES}
    stages = set()
    res = annotate_by_prototypes(pbmc_subset, markers, callback=lambda s, d, t: stages.add(s))
    assert res.options == PrototypeOptions()  # the result carries the options it was made with
    truth = pbmc_subset.obs["bulk_labels"].astype(str)
    pred = res.table.loc[truth.index, CELL_TYPE]
    acc = float((pred == truth).mean())
    f1 = f1_score(truth, pred, average="macro", zero_division=0)
    majority = truth.value_counts(normalize=True).iloc[0]
    maj_f1 = f1_score(truth, np.full(len(truth), truth.value_counts().index[0]), average="macro", zero_division=0)
    # the transfer sentence (top 20 of all genes by value) describes a cell less in the markers' terms
    plain = annotate_by_prototypes(pbmc_subset, markers, top_k=20, cell_genes="all", rank="expression")
    plain_f1 = f1_score(truth, plain.table.loc[truth.index, CELL_TYPE], average="macro", zero_division=0)
    print(f"reference-free prototypes on {len(truth)} pbmc68k cells: accuracy {acc:.3f} (majority {majority:.3f}), "
          f"macro-F1 {f1:.3f} (majority {maj_f1:.3f}; transfer-style sentences {plain_f1:.3f})")
    assert acc > majority + 0.05
    assert f1 > 3 * maj_f1
    assert f1 > plain_f1 + 0.1
    assert res.params["cell_genes"] == "markers" and res.params["rank"] == "scaled" and res.params["top_k"] == 5
    x, x_genes = prototype_cell_matrix(pbmc_subset.X, list(pbmc_subset.var_names), res.marker_set.markers)
    assert list(res.table["sentence"]) == cell_sentences(x, x_genes, 5)
    assert list(plain.table["sentence"]) == cell_sentences(pbmc_subset.X, list(pbmc_subset.var_names), 20)
    used = {g for genes in res.marker_set.markers.values() for g in genes}
    named = {g for s in res.table["sentence"] for g in re.split(r",\s*and\s+|,\s*|\s+and\s+", s.removeprefix(
        "Top genes are ").removeprefix("Top gene is ").rstrip(".")) if g}
    assert named <= used | {"No genes are detected"}
    # the table is shaped like the transfer table
    t = res.table
    assert list(t.index) == list(pbmc_subset.obs_names)
    assert {CELL_TYPE, CONFIDENCE, DISTANCE, RUNNER_UP, SIMILARITY_GAP, "sentence"} <= set(t.columns)
    n_types = len(res.types)
    assert t[CONFIDENCE].between(1.0 / n_types - 1e-6, 1.0).all()
    assert (t[RUNNER_UP] != t[CELL_TYPE]).all() and (t[SIMILARITY_GAP] >= 0).all()
    assert res.similarities.shape == (len(t), n_types)
    assert res.marker_set.n_dropped > 0  # pbmc68k_reduced keeps 765 genes: e.g. CD14, CD34 are missing
    assert "CD34" in res.marker_set.dropped["CD34+"]
    assert {"sentences", "embedding prototypes", "embedding query", "nearest prototype"} <= stages
    # confident calls are more often right
    hi = t[CONFIDENCE] >= t[CONFIDENCE].median()
    ok = pred == truth
    assert ok[hi.to_numpy()].mean() > ok[~hi.to_numpy()].mean()


def test_scaled_expression_ranks_by_enrichment_and_keeps_zeros():
    # gene A is high in every cell, B only in cell 0, C is absent from cell 1
    counts = sp.csr_matrix(np.array([[50, 20, 5], [50, 1, 0], [52, 1, 5], [48, 1, 5]], dtype=np.float32))
    z = scaled_expression(counts)
    assert z.shape == counts.shape and (z.data > 0).all()
    assert z[1, 2] == 0  # undetected stays undetected
    assert cell_sentences(counts, ["A", "B", "C"], 1)[0] == "Top gene is A."  # by value
    assert cell_sentences(z, ["A", "B", "C"], 1)[0] == "Top gene is B."  # by enrichment
    # log-normalised input is scaled as it is (not normalised again)
    # log-normalised input is scaled as it is: normalising it again would put cell 0 first
    logn = sp.csr_matrix(np.array([[0.5, 0.0], [1.0, 5.0]]))
    zl = scaled_expression(logn).toarray()
    assert zl[0, 0] < zl[1, 0] and zl[0, 1] == 0
    assert np.allclose(scaled_expression(logn.toarray()).toarray(), zl)  # dense input alike
    m, genes = prototype_cell_matrix(counts, ["A", "B", "C"], {"t": ["C", "B"]})
    assert genes == ["B", "C"] and m.shape == (4, 2)
    # symbols match like the shared panel (spaces, case) and a gene measured twice counts once
    _, g2 = prototype_cell_matrix(counts, [" a", "B", "b"], {"t": ["A", "b"]})
    assert g2 == [" a", "B"]
    # one cell: nothing to scale against, the log-normalised values are kept
    one = scaled_expression(np.array([[3, 1, 0]])).toarray()
    assert one[0, 0] > one[0, 1] > 0 == one[0, 2]
    with pytest.raises(CellamaInputError, match="NaN"):
        scaled_expression(np.array([[np.nan, 1.0]]))
    with pytest.raises(CellamaInputError, match="negative"):
        scaled_expression(np.array([[-1.0, 1.0]]))
    with pytest.raises(CellamaInputError, match="no marker gene"):
        prototype_cell_matrix(counts, ["A", "B", "C"], {"t": ["X"]})
    with pytest.raises(CellamaInputError, match="unknown gene ranking 'zscore'; use one of scaled, expression"):
        prototype_cell_matrix(counts, ["A", "B", "C"], {"t": ["B"]}, rank="zscore")


def test_cells_without_any_marker_stay_unassigned():
    import anndata as ad

    genes = ["MS4A1", "CD79A", "GNLY", "NKG7", "ACTB"]
    x = np.array([[5, 3, 0, 0, 9], [0, 0, 4, 6, 9], [0, 0, 0, 0, 12], [0, 0, 0, 0, 0]], dtype=np.float32)
    q = ad.AnnData(x, obs=pd.DataFrame(index=["b", "nk", "actb_only", "empty"]), var=pd.DataFrame(index=genes))
    markers = {"B cell": ["MS4A1", "CD79A"], "NK cell": ["GNLY", "NKG7"]}
    res = annotate_by_prototypes(q, markers)
    t = res.table
    assert t.loc["b", CELL_TYPE] == "B cell" and t.loc["nk", CELL_TYPE] == "NK cell"
    for cell in ("actb_only", "empty"):  # no marker detected: no evidence for any type
        assert t.loc[cell, CELL_TYPE] == UNASSIGNED and t.loc[cell, "transferred_type"] == UNASSIGNED
        assert t.loc[cell, CONFIDENCE] == 0 and np.isnan(t.loc[cell, DISTANCE])
    assert res.params["n_cells_without_sentence_genes"] == 2
    # with all genes, only the cell without any count is left out
    t2 = annotate_by_prototypes(q, markers, cell_genes="all").table
    assert t2.loc["empty", CELL_TYPE] == UNASSIGNED and t2.loc["actb_only", CELL_TYPE] != UNASSIGNED


def test_cli_prototypes(pbmc_subset, tmp_path, capsys):
    q = pbmc_subset[:40].copy()
    q.X = sp.csr_matrix(q.X)
    marker_cols = [i for i, g in enumerate(q.var_names) if g in {"MS4A1", "CD79A", "GNLY", "NKG7", "LYZ", "S100A8",
                                                                  "FCN1"}]
    x = q.X.tolil()
    x[:3, marker_cols] = 0  # three cells without any of the markers
    q.X = x.tocsr()
    q.write_h5ad(tmp_path / "q.h5ad")
    markers = tmp_path / "m.json"
    markers.write_text(json.dumps({"B": ["MS4A1", "CD79A", "NOT_A_GENE"], "NK": ["GNLY", "NKG7"],
                                   "Mono": ["LYZ", "S100A8", "FCN1"], "HSC": ["CD34"]}))
    out = tmp_path / "proto.csv"
    assert main(["prototypes", str(tmp_path / "q.h5ad"), "--markers", str(markers), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "NOT_A_GENE" in err and "HSC" in err  # dropped markers and types are reported
    df = pd.read_csv(out)
    assert list(df.columns) == ["cell_id", "cell_type", "confidence", "distance", "runner_up", "similarity_gap"]
    assert len(df) == 40 and set(df["cell_type"]) <= {"B", "NK", "Mono", UNASSIGNED}
    n_blank = int((df["cell_type"] == UNASSIGNED).sum())  # cells without any of the 7 markers
    assert n_blank >= 3 and (df["cell_type"].iloc[:3] == UNASSIGNED).all()
    assert f"{n_blank} cells without any detected marker gene: Unassigned" in err
    # the transfer-style sentence on request
    out2 = tmp_path / "proto_all.csv"
    assert main(["prototypes", str(tmp_path / "q.h5ad"), "--markers", str(markers), "--out", str(out2),
                 "--cell-genes", "all", "--rank", "expression", "--top-k", "20"]) == 0
    assert "without any detected" not in capsys.readouterr().err
    df2 = pd.read_csv(out2)
    assert len(df2) == 40 and not (df2["cell_type"] == UNASSIGNED).any()  # every cell has genes
    # bad input: one line, exit 2
    assert main(["prototypes", str(tmp_path / "q.h5ad"), "--markers", str(tmp_path / "none.csv"),
                 "--out", str(out)]) == 2
    assert "marker file not found" in capsys.readouterr().err
