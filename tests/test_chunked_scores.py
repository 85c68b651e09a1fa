"""Per-cell features and unknown scores in blocks (core/chunked_scores.py) equal the whole-matrix ones."""

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from tests._hash_embedder import hash_vector

from napari_cellama.core import chunked_scores as cs
from napari_cellama.core.classify import expression_features
from napari_cellama.core.head_transfer import CellSet
from napari_cellama.core.panel import shared_panel
from napari_cellama.core.sentences import cell_sentences
from napari_cellama.core.unknown import fit_unknown, unknown_scores
from napari_cellama.io import expression_for_sentences


@pytest.fixture(scope="module")
def sides():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    idx = np.random.default_rng(5).permutation(adata.n_obs)
    ref, query = adata[idx[:300]].copy(), adata[idx[300:]].copy()
    q, r, _ = shared_panel(query, ref, 20)
    genes = list(q.var_names)
    codes, uniq = pd.factorize(pd.Series(cell_sentences(q.X, genes, 20), dtype=object))
    q_emb = np.stack([hash_vector(s) for s in uniq])
    r_emb = np.stack([hash_vector(s) for s in cell_sentences(r.X, genes, 20)])
    labels = r.obs["bulk_labels"].astype(str).to_numpy()
    return q, r, q_emb, r_emb, labels, codes


@pytest.fixture
def small_blocks(monkeypatch):
    # blocks much smaller than the data, not dividing it: every boundary case is crossed
    monkeypatch.setattr(cs, "ROW_BLOCK", 37)
    monkeypatch.setattr(cs, "GENE_BLOCK", 5)


def test_features_in_blocks_equal_the_whole_matrix(sides, small_blocks):
    q = sides[0]
    whole = expression_features(q.X)
    feats = cs.ExpressionFeatures(q.X)
    parts = np.concatenate([f for _, _, f in feats.blocks(cs.ROW_BLOCK)])
    np.testing.assert_array_equal(parts, whole)
    # constant genes get a deviation of 1, as in classify.standardise
    assert (feats.sd > 0).all()


def test_unknown_scores_in_blocks_equal_the_whole_matrix(sides, small_blocks):
    q, r, q_emb, r_emb, labels, codes = sides
    cal = fit_unknown(expression_features(r.X), r_emb, labels, k=5)
    predicted = np.asarray(labels)[np.random.default_rng(0).integers(0, len(labels), q.n_obs)]
    whole = cal.scores(expression_features(q.X), q_emb[codes], predicted)
    got = cs.cell_unknown_scores(cal, CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes), predicted)
    np.testing.assert_allclose(got, whole, atol=1e-6)
    assert (got == whole).mean() > 0.99  # the conformal scores are steps: equal, not only close
    # one embedding row per cell (no sentence codes) gives the same
    per_cell = cs.cell_unknown_scores(cal, CellSet(q_emb[codes], q.X, q.obs_names), predicted)
    np.testing.assert_array_equal(per_cell, got)
    # the public unknown_scores uses the blocks
    ref = CellSet(r_emb, r.X, r.obs_names, labels=labels)
    np.testing.assert_array_equal(
        unknown_scores(CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes), ref, predicted, k=5), got)
    proj = cs.projected_expression(cal, q.X)
    np.testing.assert_allclose(proj, cal.project(expression_features(q.X)), atol=1e-6)
