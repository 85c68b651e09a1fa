"""The Qt-free core of the review dock: reference markers, evidence of one cell, dotplot
table and review queue (small synthetic and pbmc68k inputs, fast hash embedder)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _hash_embedder import HashEmbedder

from napari_cellama._constants import CONFIDENCE, TRANSFERRED_TYPE, UNASSIGNED_REASON, UNKNOWN_SCORE
from napari_cellama.core import Annotation, run_transfer
from napari_cellama.core.dotplot import dotplot_table, marker_genes_in_order
from napari_cellama.core.evidence import EvidenceIndex
from napari_cellama.core.reference_markers import marker_check, reference_markers
from napari_cellama.core.review_queue import ReviewQueue, uncertainty
from napari_cellama.core.transfer import cosine_knn, vote


def _toy_reference() -> ad.AnnData:
    """Two types; A expresses GA (and everyone RPL3 / MT-CO1, A a little more), B expresses GB."""
    rng = np.random.default_rng(0)
    genes = ["GA", "GB", "RPL3", "MT-CO1", "SHARED", "RARE"]
    n = 40
    x = np.zeros((2 * n, len(genes)))
    x[:n, 0] = rng.poisson(8, n) + 1
    x[n:, 1] = rng.poisson(8, n) + 1
    x[:, 2] = rng.poisson(30, 2 * n) + 1
    x[:n, 2] += 40  # ribosomal, "specific" to A: still never a marker
    x[:, 3] = rng.poisson(20, 2 * n) + 1
    x[:, 4] = rng.poisson(5, 2 * n) + 1  # everywhere: not specific
    x[:3, 5] = 1  # in 3 of 40 A cells: too rare
    obs = pd.DataFrame({"t": ["A"] * n + ["B"] * n}, index=[f"r{i}" for i in range(2 * n)])
    return ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes))


def test_reference_markers_are_specific_and_never_ribosomal_or_mitochondrial():
    ref = _toy_reference()
    m = reference_markers(ref, ref.obs["t"])
    assert m.loc[m["cell_type"] == "A", "gene"].tolist() == ["GA"]
    assert m.loc[m["cell_type"] == "B", "gene"].tolist() == ["GB"]
    # restricted to a gene list (the shared panel): GA absent -> A has no marker
    m2 = reference_markers(ref, ref.obs["t"], genes=["GB", "SHARED", "RPL3"])
    assert "GA" not in set(m2["gene"]) and m2.loc[m2["cell_type"] == "A"].empty
    check = marker_check(m, pd.Series({"GA": 3.0}), ["A", "B"])
    assert check.set_index("gene")["detected"].to_dict() == {"GA": True, "GB": False}
    assert check.set_index("gene")["counts"].to_dict() == {"GA": 3.0, "GB": 0.0}


@pytest.fixture(scope="module")
def pbmc():
    import scanpy as sc

    a = sc.datasets.pbmc68k_reduced()
    a = ad.AnnData(a.raw.X.copy(), obs=a.obs.copy(), var=a.raw.var.copy())
    ref, query = a[:400].copy(), a[400:550].copy()
    result = run_transfer(query, ref, "bulk_labels", embedder=HashEmbedder())
    return ref, query, result


def test_evidence_neighbours_and_vote_match_the_knn(pbmc):
    ref, query, result = pbmc
    markers = reference_markers(ref, result.reference_labels, result.panel.shared_genes)
    index = EvidenceIndex(result, query, markers, k=7)
    ann = Annotation(result.table)
    cell = str(query.obs_names[5])
    ev = index.cell(cell, ann)
    row = result.table.index.get_loc(cell)
    idx, sim = cosine_knn(result.query_embeddings[row:row + 1], result.reference_embeddings, 7)
    assert ev.reference_rows.tolist() == idx[0].tolist()
    np.testing.assert_allclose(ev.neighbours["similarity"], sim[0], atol=1e-5)
    labels = np.asarray(result.reference_labels).astype(str)
    assert ev.neighbours["label"].tolist() == labels[idx[0]].tolist()
    cats = sorted(set(labels))
    codes = np.array([cats.index(t) for t in labels])
    best, conf, _ = vote(codes[idx], sim, cats)
    assert ev.vote.index[0] == cats[best[0]] and ev.vote.iloc[0] == pytest.approx(conf[0])
    # the engine's call (the ensemble's) is reported as it is
    assert ev.transferred_type == result.table.loc[cell, TRANSFERRED_TYPE]
    assert ev.confidence == pytest.approx(result.table.loc[cell, CONFIDENCE])
    # counts on the shared panel: the cell's own
    x = np.asarray(query[cell].X.todense()).ravel()
    genes = list(query.var_names)
    for g, c in ev.counts.items():
        assert c == pytest.approx(x[genes.index(g)]) and g in result.panel.shared_genes
    assert int((x[[genes.index(g) for g in result.panel.shared_genes]] > 0).sum()) == len(ev.counts)
    assert set(ev.markers["cell_type"]) <= {ev.label, ev.transferred_type, ev.runner_up}


def test_dotplot_table_fraction_and_mean(pbmc):
    ref, query, result = pbmc
    ann = Annotation(result.table)
    markers = reference_markers(ref, result.reference_labels, result.panel.shared_genes)
    genes = marker_genes_in_order(markers, per_type=2)
    t = dotplot_table(query, ann.cell_type, genes)
    assert len(t) == ann.cell_type.nunique() * len(genes)
    group = ann.cell_type.value_counts().index[0]
    cells = ann.cells_of(group)
    gene = genes[0]
    x = np.asarray(query[cells, gene].X.todense()).ravel()  # pbmc68k raw is already log-normalised
    r = t[(t["group"] == group) & (t["gene"] == gene)].iloc[0]
    assert r["fraction"] == pytest.approx((x > 0).mean()) and r["mean"] == pytest.approx(x.mean(), rel=1e-5)
    assert r["n_cells"] == len(cells)


def test_queue_order_filters_counts_and_undo():
    ids = [f"c{i}" for i in range(8)]
    table = pd.DataFrame({TRANSFERRED_TYPE: ["A", "A", "B", "B", "A", "B", "A", "B"],
                          CONFIDENCE: [0.9, 0.2, 0.5, 0.95, 0.6, 0.3, 0.1, 0.0],
                          UNKNOWN_SCORE: [0.0, 0.0, 0.0, 0.99, 0.0, 0.0, 0.0, 0.0],
                          UNASSIGNED_REASON: [""] * 7 + ["no shared gene"], "distance": 0.1}, index=ids)
    u = uncertainty(table)
    assert u["c3"] == pytest.approx(0.99)  # the Unknown score counts too
    ann = Annotation(table)
    q = ReviewQueue(ann)
    assert list(q.cell_ids) == ["c3", "c6", "c1", "c5", "c2", "c4", "c0"]  # c7: no gene, not queued
    assert q.next() == "c3" and q.next() == "c6"
    ann.mark_reviewed(["c6"])
    ann.assign(["c1"], "B", reason="review", review=True)
    assert q.counts() == (2, 5)
    assert q.next() == "c5"  # c1 reviewed: skipped
    assert q.previous() == "c1"  # back: reviewed cells are revisited
    ann.undo()
    ann.undo()
    assert q.counts() == (0, 7)
    assert q.set_filters(label="A") == 4 and set(q.cell_ids) == {"c0", "c1", "c4", "c6"}
    assert q.set_filters(label="A", below=0.5) == 2
    assert q.set_filters(region=["c0", "c5", "zz"]) == 2 and list(q.cell_ids) == ["c5", "c0"]
    assert q.go_to("c0") and q.current == "c0"
