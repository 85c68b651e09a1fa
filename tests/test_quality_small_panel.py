"""The ensemble on small panels (issue 14): per-cell embedding weights and depth-aware expression.

Most cells of a 30-gene panel name 1-3 genes in their sentence; a one-gene sentence says no
more than the expression model sees, and normalising to 10,000 per cell drops the one thing a
one-gene cell still has, its count. The accuracy guard runs the real model on the shared
pbmc3k reference restricted to 30 and 150 genes of the bone-marrow panel (panel seed 1, the
setting where the previous ensemble lost to logistic regression: docs/quality.md), split 50/50
(seed 0). Not timed; the full measurement is ``benchmarks/quality_transfer.py --only b2
--panel-seed 1`` and ``benchmarks/quality_combiners.py``.
"""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from tests._hash_embedder import hash_vector

from napari_cellama._constants import DEFAULT_EXPRESSION_WEIGHT, TRANSFERRED_TYPE
from napari_cellama.core._progress import run
from napari_cellama.core.classify import (
    detected_genes,
    embedding_weights,
    expression_model_features,
    fit_heads,
    log_normalise,
)
from napari_cellama.core.head_transfer import CellSet, iter_head_transfer
from napari_cellama.core.sentences import cell_sentences
from napari_cellama.core.surrogate_label import head_label_function
from napari_cellama.core.transfer_options import TransferOptions

DATA = Path("/work/shared/data")
PBMC3K = DATA / "references/pbmc3k/pbmc3k.h5ad"
FEATURES = DATA / "xenium_bone_marrow/cell_feature_matrix/features.tsv.gz"


def _f1(truth, pred):
    return f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0)


def test_embedding_weight_rises_with_the_genes_of_the_sentence():
    w = embedding_weights(np.array([0, 1, 2, 3, 20]), 1 - DEFAULT_EXPRESSION_WEIGHT)
    np.testing.assert_allclose(w, [0.0, 0.0, 0.2, 0.4, 0.4])
    counts = sp.csr_matrix(np.array([[0, 0, 0], [3, 0, 0], [1, 2, 0], [1, 1, 1]]))
    np.testing.assert_array_equal(detected_genes(counts), [0, 1, 2, 3])


def test_expression_features_keep_the_depth_that_normalisation_drops():
    counts = sp.csr_matrix(np.array([[1, 0], [5, 0], [0, 2]], dtype=np.float32))
    ln = log_normalise(counts).toarray()
    assert ln[0, 0] == ln[1, 0]  # one detected gene: the same normalised value whatever its count
    f = expression_model_features(counts).toarray()
    assert f.shape == (3, 4)
    np.testing.assert_allclose(f[:, :2], ln)
    np.testing.assert_allclose(f[:, 2:], np.log1p(counts.toarray()))


def _toy(n=240, seed=0):
    """Three types on 6 genes; type 2 differs from type 1 only by depth (the same gene, more counts)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), n // 3)
    x = np.zeros((n, 6), dtype=np.float32)
    x[y == "a", 0] = rng.poisson(3, (y == "a").sum()) + 1
    x[y == "b", 1] = rng.poisson(1, (y == "b").sum()) + 1
    x[y == "c", 1] = rng.poisson(8, (y == "c").sum()) + 1
    x[:, 2:] = rng.poisson(0.3, (n, 4))
    return sp.csr_matrix(x), y


def test_the_expression_model_sees_counts_and_falls_back_for_normalised_queries():
    x, y = _toy()
    emb = np.stack([hash_vector(s) for s in cell_sentences(x, list("ABCDEF"), 20)])
    heads = fit_heads(emb, x, y)
    assert heads.uses_counts and heads.expression_head.n_features_in_ == 12
    qx, qy = _toy(seed=1)
    with_counts = heads.expression_proba(qx).argmax(axis=1)
    normalised = heads.expression_proba(log_normalise(qx)).argmax(axis=1)  # no counts: the normalised model
    cats = heads.categories
    # b and c differ only in depth: with counts they separate, from normalised values they cannot
    assert _f1(qy, cats[with_counts]) > _f1(qy, cats[normalised]) + 0.1
    # a reference without counts fits only the normalised model, whatever the query
    plain = fit_heads(emb, log_normalise(x), y)
    assert not plain.uses_counts and plain.expression_head.n_features_in_ == 6
    np.testing.assert_allclose(plain.expression_proba(qx), plain.expression_proba(log_normalise(qx)))
    np.testing.assert_allclose(heads.expression_proba(log_normalise(qx)), plain.expression_proba(qx), atol=1e-6)


def test_surrogate_label_function_uses_the_same_per_cell_weights():
    """On a small panel (most sentences of 1-3 genes) the surrogate check's label function gives
    exactly the transfer's labels, so it judges the per-cell weighted ensemble."""
    x, y = _toy(300, seed=2)
    qx, _ = _toy(150, seed=3)
    genes = list("ABCDEF")
    r_emb = np.stack([hash_vector(s) for s in cell_sentences(x, genes, 20)])
    qs = cell_sentences(qx, genes, 20)
    codes, uniq = pd.factorize(pd.Series(qs, dtype=object))
    q_emb = np.stack([hash_vector(s) for s in uniq])
    assert (detected_genes(qx) < 3).mean() > 0.3
    options = TransferOptions(unknown_clusters=False)
    heads = fit_heads(r_emb, x, y)
    query = CellSet(q_emb, qx, pd.RangeIndex(qx.shape[0]), sentence_codes=codes)
    reference = CellSet(r_emb, x, pd.RangeIndex(x.shape[0]), labels=y)
    table = run(iter_head_transfer(query, reference, options, heads=heads))
    got, comps = head_label_function(query, reference, options, heads)(q_emb)
    np.testing.assert_array_equal(got, table["cell_type"].to_numpy())
    # its probability margins are those of the per-cell weighted average, not the constant one
    emb_p, expr_p = heads.embedding_proba(q_emb)[codes], heads.expression_proba(qx)

    def margin(p):
        top2 = np.sort(p, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]

    np.testing.assert_allclose(comps[:, 0], margin(heads.combine(emb_p, expr_p, detected_genes(qx))), atol=1e-6)
    assert np.abs(comps[:, 0] - margin(heads.combine(emb_p, expr_p))).max() > 0.05


@pytest.fixture(scope="module")
def pbmc3k():
    if not (PBMC3K.exists() and FEATURES.exists()):
        pytest.skip("needs the shared pbmc3k reference and the bone-marrow panel")
    import anndata as ad

    a = ad.read_h5ad(PBMC3K)
    with gzip.open(FEATURES, "rt") as fh:
        panel = sorted(r[1] for r in (line.rstrip("\n").split("\t") for line in fh) if r[2] == "Gene Expression")
    return a, panel


@pytest.mark.parametrize("n_genes", [30, 150])
def test_small_panel_ensemble_beats_logistic_regression(pbmc3k, tmp_path_factory, n_genes):
    """Real model; 30 / 150 genes of the panel (panel seed 1, 28 / 143 in pbmc3k), split seed 0.
    Measured: 30 genes 0.243 vs LR 0.236 (previous ensemble 0.235); 150 genes 0.649 vs 0.601 (0.629)."""
    from napari_cellama.core import Embedder

    a, panel = pbmc3k
    chosen = {g.upper() for g in np.random.default_rng(1).choice(panel, n_genes, replace=False)}
    keep = [i for i, g in enumerate(a.var_names) if g.upper() in chosen]
    genes = [str(g) for g in a.var_names[keep]]
    x = sp.csr_matrix(a.X[:, keep], dtype=np.float32)
    y = a.obs["cell_type"].astype(str).to_numpy()
    tr, te = (np.sort(i) for i in train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=0))
    sentences = cell_sentences(x, genes, 20)
    codes, uniq = pd.factorize(pd.Series(sentences, dtype=object))
    vec = Embedder(cache=tmp_path_factory.mktemp("emb")).encode(list(uniq))
    ref = CellSet(vec[codes[tr]], x[tr], pd.RangeIndex(len(tr)), labels=y[tr])
    query = CellSet(vec[codes[te]], x[te], pd.RangeIndex(len(te)))
    table = run(iter_head_transfer(query, ref, TransferOptions(unknown_clusters=False)))
    ours = _f1(y[te], table[TRANSFERRED_TYPE])
    lr = LogisticRegression(max_iter=10000).fit(log_normalise(x[tr]), y[tr]).predict(log_normalise(x[te]))
    heads = fit_heads(ref.embeddings, log_normalise(x[tr]), y[tr])  # the previous ensemble: constant weights,
    old = heads.categories[heads.combine(heads.embedding_proba(query.embeddings),  # normalised expression only
                                         heads.expression_proba(log_normalise(x[te]))).argmax(1)]
    assert ours > _f1(y[te], lr) + 0.005, (ours, _f1(y[te], lr))
    assert ours > _f1(y[te], old), (ours, _f1(y[te], old))
