"""Surrogate embedding mode, its label check, EmbeddingOptions / make_embedder, and the CLI cache."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from napari_cellama._constants import EMBED_MODE, EMBED_MODE_SURROGATE
from napari_cellama.core import run_transfer
from napari_cellama.core.cache import EmbeddingCache
from napari_cellama.core.embed import Embedder
from napari_cellama.core.embedding_options import EmbeddingOptions, make_embedder
from napari_cellama.core.sentences import adata_sentences
from napari_cellama.core.surrogate import SurrogateEmbedder, SurrogateModel, sentence_words
from napari_cellama.core.surrogate_check import (
    SurrogateAgreementWarning,
    choose_threshold,
    knn_score_function,
    margins,
)
from napari_cellama.io import expression_for_sentences
from napari_cellama.validators import CellamaInputError

LABEL = "bulk_labels"


@pytest.fixture(scope="module")
def pbmc():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    rng = np.random.default_rng(1)
    idx = rng.permutation(adata.n_obs)
    return adata[idx[:300]].copy(), adata[idx[300:]].copy()


@pytest.fixture(scope="module")
def exact_vectors(pbmc):
    """Exact (onnx float32) vectors of every pbmc68k sentence, embedded once."""
    ref, query = pbmc
    sentences = adata_sentences(ref) + adata_sentences(query)
    emb = Embedder(mode="onnx")
    return sentences, emb.encode(sentences)


def test_sentence_words():
    assert sentence_words("Top genes are CD3E, IL7R, and HLA-DR.") == ["Top", "genes", "are", "CD3E", "IL7R",
                                                                         "and", "HLA-DR"]
    assert sentence_words("Top gene is MS4A1.") == ["Top", "gene", "is", "MS4A1"]


def test_surrogate_model_learns_the_real_model(exact_vectors):
    sentences, vectors = exact_vectors
    model = SurrogateModel().fit(sentences[:600], vectors[:600])
    pred, unknown = model.predict(sentences[600:])
    cos = np.sum(pred[~unknown] * vectors[600:][~unknown], axis=1)
    np.testing.assert_allclose(np.linalg.norm(pred, axis=1), 1.0, atol=1e-4)
    assert cos.mean() > 0.95, cos.mean()  # 600 sentences of 765 genes: a hard, small fit
    # the training sentences themselves are reproduced closely (ridge 0.1)
    again, _ = model.predict(sentences[:50])
    assert np.sum(again * vectors[:50], axis=1).mean() > 0.99
    # a word never seen in fitting is flagged
    _, unk = model.predict(["Top genes are NOTAGENE1, CD3E, and IL7R."])
    assert unk.all()


def test_fit_kernel_and_training_features_equal_the_sparse_products(exact_vectors):
    """The fit builds its kernel as sparse x dense (fast); it equals the sparse x sparse product,
    and the kept training features equal the transposed sparse features (of the used features)."""
    sentences, vectors = exact_vectors
    model = SurrogateModel().fit(sentences[:300], vectors[:300])
    x, _ = model.features(sentences[:300])
    k = np.square((x @ x.T).toarray() + 1.0)
    k[np.diag_indices_from(k)] += model.ridge
    alpha = np.linalg.solve(k, vectors[:300].astype(np.float64))
    np.testing.assert_allclose(model._alpha, alpha.astype(np.float32), rtol=1e-4, atol=1e-4)
    assert model._train.flags["C_CONTIGUOUS"] and model._train.dtype == np.float32
    # only the features some fitted sentence has are kept (the others add 0 to every product)
    used = np.flatnonzero(x.getnnz(axis=0))
    assert 0 < len(used) < x.shape[1]
    np.testing.assert_array_equal(model._cols, used)
    np.testing.assert_array_equal(model._train, x[:, used].T.toarray().astype(np.float32))
    # predictions equal the kernel formula over all the features
    xq, _ = model.features(sentences[300:360])
    z = np.square((xq @ x.T).toarray() + 1.0) @ alpha
    got, _, norm = model.predict(sentences[300:360], return_norm=True)
    np.testing.assert_allclose(got, z / np.linalg.norm(z, axis=1, keepdims=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm, np.linalg.norm(z, axis=1), rtol=1e-4)


def test_choose_threshold_and_margins():
    s = np.array([[0.6, 0.3, 0.1], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(margins(s), [0.3, 0.0, 1.0])
    # held-out: disagreements only at small margins
    m = np.linspace(0, 1, 1000)
    d = m < 0.2
    t, est = choose_threshold(m, d, 1.0, 0.99)
    assert 0.19 <= t < 0.2 and est >= 0.99  # a few disagreements fit under the 95% bound
    # no held-out disagreement at all: everything above the smallest margin is kept
    t0, est0 = choose_threshold(m, np.zeros(1000, bool), 0.5, 0.99)
    assert t0 == m[0] and est0 >= 0.99
    # a target that the held-out check cannot show: re-embed everything
    t1, _ = choose_threshold(m[:50], np.zeros(50, bool), 1.0, 0.999)
    assert t1 == np.inf


def _surrogate(n_fit=150, n_check=100, **kwargs):
    return make_embedder(EmbeddingOptions(mode="surrogate", exact_mode="onnx", surrogate_fit=n_fit,
                                          surrogate_check=n_check, **kwargs))


def test_leave_one_out_predictions_equal_refits(exact_vectors):
    """The closed-form leave-one-out predictions equal those of the map refitted without each sentence."""
    sentences, vectors = exact_vectors
    fit_s, fit_v = sentences[:400], vectors[:400]
    model = SurrogateModel().fit(fit_s, fit_v, loo=30)
    assert model.loo_vectors.shape == (30, vectors.shape[1]) and model.loo_norm.shape == (30,)
    np.testing.assert_allclose(np.linalg.norm(model.loo_vectors, axis=1), 1.0, atol=1e-5)
    checked = 0
    for i in range(30):
        rest = [s for j, s in enumerate(fit_s) if j != i]
        refit = SurrogateModel().fit(rest, np.delete(fit_v, i, axis=0))
        pred, unknown, norm = refit.predict([fit_s[i]], return_norm=True)
        if unknown[0]:  # a word only this sentence has: the refit cannot see it (the closed form can)
            continue
        np.testing.assert_allclose(pred[0], model.loo_vectors[i], atol=2e-5)
        np.testing.assert_allclose(norm[0], model.loo_norm[i], rtol=2e-5)
        checked += 1
    assert checked >= 10
    # and they are held-out predictions: further from the exact vectors than the fitted ones
    fitted, _ = model.predict(fit_s[:30])
    assert np.sum(model.loo_vectors * fit_v[:30], axis=1).mean() < np.sum(fitted * fit_v[:30], axis=1).mean()
    # without loo nothing extra is computed
    assert SurrogateModel().fit(fit_s, fit_v).loo_vectors is None


@pytest.mark.parametrize("heldout", ["loo", "split"])
def test_surrogate_transfer_checks_labels_and_records(pbmc, exact_vectors, heldout):
    ref, query = pbmc
    exact = run_transfer(query, ref, LABEL, mode="onnx")
    emb = _surrogate()
    emb.exact_below = 0  # tiny test data: use the surrogate anyway
    emb.n_fit, emb.n_check, emb.heldout = 150, 100, heldout
    result = run_transfer(query, ref, LABEL, embedder=emb)
    check = result.params["surrogate_check"]
    assert result.params[EMBED_MODE] == EMBED_MODE_SURROGATE
    assert check["heldout"] == heldout
    n_rest = len(set(result.table["sentence"])) - 250  # neither fitted nor held out (250 sampled)
    # leave-one-out: every sampled sentence is fitted and held out; split: 100 held out of the fit
    assert check["n_check"] == (250 if heldout == "loo" else 100)
    own = 250 if heldout == "loo" else 150  # plus the reference's sentences (those not sampled as well)
    assert own < check["n_fit"] <= own + len(set(adata_sentences(ref)))
    assert check["predicted"] + check["unknown_words_exact"] + check["frequent_exact"] == n_rest
    assert 0.0 <= check["share_reembedded"] <= 1.0 and check["reembedded"] <= check["predicted"]
    assert check["meets_target"] is True and check["estimated_agreement"] >= 0.99
    agree = (result.table["cell_type"] == exact.table["cell_type"]).mean()
    assert agree >= 0.99, (agree, check)
    # the exact vectors of the reference, fit and check sentences are the exact model's
    sent, vec = exact_vectors
    lookup = dict(zip(sent, vec))
    np.testing.assert_allclose(result.reference_embeddings[:5], np.stack([lookup[s] for s in
                                                                         adata_sentences(ref)[:5]]), atol=1e-5)


def test_surrogate_that_cannot_meet_the_target_warns_and_records(pbmc):
    ref, query = pbmc
    # a target that ~250 held-out cells cannot show (their 95% bound alone is ~1%) with no
    # re-embedding allowed
    emb = _surrogate(max_exact_share=0.0, target_agreement=0.999)
    emb.exact_below = 0
    with pytest.warns(SurrogateAgreementWarning, match="below the target"):
        result = run_transfer(query, ref, LABEL, embedder=emb)
    check = result.params["surrogate_check"]
    assert check["meets_target"] is False and check["reembedded"] == 0
    assert check["estimated_agreement"] < 0.999


def test_a_float32_factor_that_fails_is_redone_in_float64(exact_vectors, monkeypatch):
    """Should float32 rounding break the kernel's positive definiteness, the fit is redone in
    float64 with the same map (and the same leave-one-out predictions, to float32 precision)."""
    import scipy.linalg as sl

    sentences, vectors = exact_vectors
    want = SurrogateModel().fit(sentences[:300], vectors[:300], loo=20)
    real = sl.cho_factor
    dtypes = []

    def fails_in_float32(a, *args, **kwargs):
        dtypes.append(a.dtype)
        if a.dtype == np.float32:
            raise np.linalg.LinAlgError("not positive definite")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(sl, "cho_factor", fails_in_float32)
    got = SurrogateModel().fit(sentences[:300], vectors[:300], loo=20)
    assert dtypes == [np.float32, np.float64]
    np.testing.assert_allclose(got.loo_vectors, want.loo_vectors, atol=1e-4)
    pred, _ = got.predict(sentences[300:320])
    np.testing.assert_allclose(pred, want.predict(sentences[300:320])[0], atol=1e-4)
    with pytest.raises(RuntimeError, match="fit the surrogate first"):
        SurrogateModel().predict(sentences[:2])


def test_the_sample_grows_with_the_run():
    """3,000 sampled sentences (2,000 + 1,000) up to 100,000 to embed, then times the square root of
    the growth, at most MAX_SAMPLE; the fitted share is kept (the split check holds the rest out)."""
    from napari_cellama.core.surrogate import MAX_SAMPLE, SAMPLE_GROWTH_FROM

    emb = SurrogateEmbedder(Embedder(mode="onnx"))
    assert emb.sample_size(65_911) == emb.sample_size(SAMPLE_GROWTH_FROM) == (2000, 3000)
    assert emb.sample_size(4 * SAMPLE_GROWTH_FROM) == (4000, 6000) == emb.sample_size(10**7)
    assert emb.sample_size(2 * SAMPLE_GROWTH_FROM) == (2829, 4243)
    assert MAX_SAMPLE == 6000
    # a larger sample asked for is never cut below itself
    assert SurrogateEmbedder(Embedder(mode="onnx"), n_fit=7000, n_check=1000).sample_size(10**6) == (7000, 8000)


def test_heldout_scheme_is_checked():
    with pytest.raises(CellamaInputError, match="loo"):
        SurrogateEmbedder(Embedder(mode="onnx"), heldout="half")


def test_small_runs_are_embedded_exactly(pbmc):
    ref, query = pbmc
    emb = _surrogate()  # 400 query sentences <= exact_below
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurrogateAgreementWarning)
        result = run_transfer(query, ref, LABEL, embedder=emb)
    check = result.params["surrogate_check"]
    assert check["predicted"] == 0 and check["meets_target"] is True
    assert emb.last_stats["predicted"] == 0


def test_knn_score_function_matches_transfer(pbmc, exact_vectors):
    _, vec = exact_vectors
    ref, _ = pbmc
    labels = ref.obs[LABEL].astype(str).to_numpy()
    from napari_cellama.core.transfer import knn_transfer

    table = knn_transfer(vec[300:], vec[:300], labels, k=10)
    scores = knn_score_function(vec[:300], labels, 10)(vec[300:])
    cats = np.unique(labels)
    assert (cats[scores.argmax(axis=1)] == table["transferred_type"].to_numpy()).all()
    np.testing.assert_allclose(scores.max(axis=1), table["confidence"], atol=1e-5)


# ----------------------------------------------------------------------------- options and factory


def test_embedding_options_and_factory(tmp_path):
    opts = EmbeddingOptions(mode="ONNX", cache=tmp_path)
    assert opts.mode == "onnx"
    emb = make_embedder(opts)
    assert isinstance(emb, Embedder) and emb.mode == "onnx" and emb.cache.root == tmp_path
    sur = make_embedder(opts, mode="surrogate")
    assert isinstance(sur, SurrogateEmbedder) and sur.exact_mode == "onnx" and sur.cache.root == tmp_path
    assert sur.describe()["mode"] == "surrogate" and sur.describe()["exact_mode"] == "onnx"
    with pytest.raises(CellamaInputError, match="unknown embedding mode"):
        EmbeddingOptions(mode="turbo")
    with pytest.raises(CellamaInputError, match="target agreement"):
        EmbeddingOptions(target_agreement=1.5)
    with pytest.raises(CellamaInputError, match="surrogate_fit must be a whole number >= 1"):
        EmbeddingOptions(surrogate_fit=-3)
    with pytest.raises(CellamaInputError, match="surrogate_check must be a whole number >= 0"):
        EmbeddingOptions(surrogate_check=2.5)
    assert EmbeddingOptions(surrogate_fit=1, surrogate_check=0).surrogate_check == 0

    class Args:
        model, mode, device, allow_download, dask_scheduler = None, "surrogate", "cpu", False, None

    assert EmbeddingOptions.from_args(Args()) == EmbeddingOptions(mode="surrogate", device="cpu", cache=True)


def _packs(root):
    cache = EmbeddingCache(root)
    return {ns: len(cache._packs(ns)) for ns in cache.namespaces()}


def test_prototype_and_niche_cli_reuse_the_cache(demo_data, pbmc, tmp_path, monkeypatch):
    """Issue 12: the niche and prototype commands never passed the cache; a re-run now reads it."""
    import json

    from napari_cellama.cli import main

    monkeypatch.setenv("NAPARI_CELLAMA_CACHE", str(tmp_path))
    _, query = pbmc
    query[:40].copy().write_h5ad(tmp_path / "q.h5ad")
    markers = tmp_path / "m.json"
    markers.write_text(json.dumps({"B": ["MS4A1", "CD79A"], "NK": ["GNLY", "NKG7"], "Mono": ["LYZ", "S100A8"]}))
    d = demo_data
    labels = pd.read_csv(d.truth_csv, dtype=str)
    cell_type = labels["cell_type"].value_counts().index[0]
    commands = [
        ["prototypes", str(tmp_path / "q.h5ad"), "--markers", str(markers), "--out", str(tmp_path / "p.csv")],
        ["niche", str(d.xenium_dir), "--labels", str(d.truth_csv), "--cell-types", cell_type,
         "--neighbors", "10", "--n-clusters", "2", "--max-cells", "60", "--out", str(tmp_path / "n.csv")],
    ]
    for args in commands:
        assert main(args) == 0
    first = _packs(tmp_path / "embeddings")
    assert first and sum(first.values()) >= 2, first
    # a re-run embeds nothing: it never loads a model and writes no new pack
    monkeypatch.setattr(Embedder, "load", lambda self: (_ for _ in ()).throw(AssertionError("model loaded")))
    for args in commands:
        assert main([*args, "--mode", "onnx"]) == 0
    assert _packs(tmp_path / "embeddings") == first
    # --no-cache embeds again: the model must load (the patched load fails the command)
    assert main([*commands[0], "--no-cache"]) == 1


@pytest.mark.parametrize("lower", [True, False])
def test_leave_one_out_closed_form_from_either_triangle(lower):
    """The leave-one-out predictions from a lower or an upper Cholesky factor (the fit passes an
    upper one, factored in place) equal ``y - alpha / diag((K + ridge I)^-1)``."""
    import scipy.linalg as sl

    from napari_cellama.core.surrogate_model import _loo

    rng = np.random.default_rng(3)
    a = rng.normal(size=(700, 40))
    k = np.square(a @ a.T / 40 + 1.0) + 0.1 * np.eye(700)  # > 2 blocks of the in-place sums
    y = rng.normal(size=(700, 8))
    alpha = np.linalg.solve(k, y)
    expect = y[:500] - alpha[:500] / np.diag(np.linalg.inv(k))[:500, None]
    factor = sl.cho_factor(np.array(k, order="F"), lower=lower, overwrite_a=True)
    got, norm = _loo(factor, sl.cho_solve(factor, y), y, 500)
    np.testing.assert_allclose(norm, np.linalg.norm(expect, axis=1), rtol=1e-6)
    np.testing.assert_allclose(got, expect / np.linalg.norm(expect, axis=1)[:, None], atol=1e-6)


def test_sparse_dense_product_in_bands_equals_one_product(monkeypatch):
    """The surrogate's kernel products split rows over threads; the result is the same to the bit."""
    import scipy.sparse as sp

    from napari_cellama.core.surrogate_model import _sparse_dense

    rng = np.random.default_rng(5)
    a = sp.random(1000, 300, density=0.05, format="csr", random_state=6, dtype=np.float32)
    b = rng.normal(size=(300, 70)).astype(np.float32)
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        got = _sparse_dense(a, b)
        np.testing.assert_array_equal(got, np.asarray(a @ b))
        assert got.dtype == np.float32
    assert _sparse_dense(a[:0], b).shape == (0, 70)
