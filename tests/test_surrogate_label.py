"""The surrogate check judges the final labels of the method actually run (core/surrogate_label.py)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from tests._hash_embedder import HashEmbedder, hash_vector

from napari_cellama._constants import UNASSIGNED, UNKNOWN
from napari_cellama.core import run_transfer
from napari_cellama.core.classify import fit_heads, log_normalise
from napari_cellama.core.head_transfer import CellSet, iter_head_transfer
from napari_cellama.core.panel import shared_panel
from napari_cellama.core.sentences import cell_sentences
from napari_cellama.core.surrogate import SurrogateEmbedder
from napari_cellama.core.surrogate_check import SurrogateAgreementWarning, iter_refine
from napari_cellama.core.surrogate_label import HeadLabelFunction, KnnLabelFunction, head_label_function
from napari_cellama.core.transfer_options import TransferOptions
from napari_cellama.io import expression_for_sentences

LABEL = "bulk_labels"


@pytest.fixture(scope="module")
def pbmc():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    idx = np.random.default_rng(3).permutation(adata.n_obs)
    return adata[idx[:350]].copy(), adata[idx[350:]].copy()


def _sides(pbmc):
    ref, query = pbmc
    q, r, _ = shared_panel(query, ref, 20)
    genes = list(q.var_names)
    qs = cell_sentences(q.X, genes, 20)
    codes, uniq = pd.factorize(pd.Series(qs, dtype=object))
    q_emb = np.stack([hash_vector(s) for s in uniq])
    r_emb = np.stack([hash_vector(s) for s in cell_sentences(r.X, genes, 20)])
    labels = r.obs[LABEL].astype(str).to_numpy()
    clusters = query.obs["louvain"].astype(str).reindex(q.obs_names).to_numpy(dtype=object)
    return q, r, q_emb, r_emb, labels, codes, clusters


@pytest.mark.parametrize("options", [TransferOptions(), TransferOptions(unknown_alpha=0.4),
                                     TransferOptions(method="head", unknown_alpha=0.4),
                                     TransferOptions(min_confidence=0.5, max_distance=0.9, unknown_alpha=0.4),
                                     TransferOptions(unknown_alpha=0.3, unknown_clusters=False)])
def test_head_label_function_reproduces_the_head_transfer(pbmc, options):
    q, r, q_emb, r_emb, labels, codes, clusters = _sides(pbmc)
    heads = fit_heads(r_emb, log_normalise(r.X), labels, method=options.method, c=options.head_c,
                      expression_weight=options.expression_weight, seed=options.seed)
    query = CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes, clusters=clusters)
    reference = CellSet(r_emb, r.X, r.obs_names, labels=labels)
    from napari_cellama.core._progress import run

    table = run(iter_head_transfer(query, reference, options, heads=heads))
    fn = head_label_function(query, reference, options, heads)
    got, comps = fn(q_emb)
    np.testing.assert_array_equal(got, table["cell_type"].to_numpy())
    assert comps.shape == (q.n_obs, len(fn.components)) and (comps >= 0).all()
    # the test exercises the decisions it claims to (several types; Unknown / Unassigned where set)
    assert len(set(got)) > 2
    if options.calls_unknown and options.unknown_alpha >= 0.3:
        assert (got == UNKNOWN).any()
    if options.min_confidence > 0:
        assert (got == UNASSIGNED).any()
    # the components are the distances to each decision's boundary
    proba = heads.combine(heads.embedding_proba(q_emb)[codes],
                          None if heads.expression_head is None else heads.expression_proba(log_normalise(q.X)))
    top2 = np.sort(proba, axis=1)[:, -2:]
    np.testing.assert_allclose(comps[:, 0], top2[:, 1] - top2[:, 0], atol=1e-6)
    # a subset of cells gets the same labels as in the whole
    cells = np.arange(0, q.n_obs, 7)
    sub, _ = fn(q_emb, cells)
    np.testing.assert_array_equal(sub, got[cells])


def _noisy_surrogate(base, noise):
    """A SurrogateEmbedder whose 'surrogate' is the exact (hash) vector plus fixed noise."""

    class Noisy(SurrogateEmbedder):
        def iter_encode(self, sentences, stage="embed"):
            sentences = list(sentences)
            codes, uniq = pd.factorize(pd.Index(sentences, dtype=object))
            exact = np.stack([hash_vector(s) for s in uniq])
            rng = np.random.default_rng(0)
            pred = exact + noise * rng.standard_normal(exact.shape).astype(np.float32)
            pred /= np.linalg.norm(pred, axis=1, keepdims=True)
            heldout = np.arange(0, len(uniq), 3)  # every third sentence held out (exact)
            predicted = np.ones(len(uniq), bool)
            predicted[heldout] = False
            vectors = np.where(predicted[:, None], pred, exact).astype(np.float32)
            self._last = {"codes": codes, "uniques": [str(s) for s in uniq], "predicted": predicted,
                          "heldout": heldout, "heldout_surrogate": pred[heldout]}
            self.last_check = {"n_check": len(heldout)}
            yield (stage, len(uniq), len(uniq))
            return vectors[codes]

    return Noisy(base)


def test_refine_uses_the_label_function_and_reembeds_the_fragile_cells(pbmc):
    q, r, q_emb, r_emb, labels, codes, clusters = _sides(pbmc)
    options = TransferOptions()
    heads = fit_heads(r_emb, log_normalise(r.X), labels)
    query = CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes, clusters=clusters)
    fn = head_label_function(query, CellSet(r_emb, r.X, r.obs_names, labels=labels), options, heads)
    exact_labels, _ = fn(q_emb)
    base = HashEmbedder()
    emb = _noisy_surrogate(base, 0.05)
    emb.target = 0.9
    sentences = cell_sentences(q.X, list(q.var_names), 20)
    from napari_cellama.core._progress import run

    noisy = run(emb.iter_encode(sentences))
    before, comps = fn(noisy[np.unique(codes, return_index=True)[1]])
    refined = run(iter_refine(emb, noisy, fn))
    check = emb.last_check
    after, _ = fn(refined[np.unique(codes, return_index=True)[1]])
    assert check["label_function"] == "HeadLabelFunction"
    assert check["components"] == list(fn.components)
    # the re-embedded sentences are exact now, the others kept their surrogate vectors
    redone = check["reembedded"]
    assert 0 < redone == base.embedded
    assert (after == exact_labels).mean() >= (before == exact_labels).mean()
    # every cell whose label changed under the noise was among the least robust ones re-embedded
    assert check["meets_target"] is True
    assert (after == exact_labels).mean() >= 0.9


def test_knn_label_function_is_the_vote(pbmc):
    q, r, q_emb, r_emb, labels, codes, _ = _sides(pbmc)
    fn = KnnLabelFunction(r_emb, labels, codes, 5)
    got, comps = fn(q_emb)
    from napari_cellama.core.transfer import knn_transfer

    table = knn_transfer(q_emb[codes], r_emb, labels, k=5)
    np.testing.assert_array_equal(got, table["transferred_type"].to_numpy())
    assert comps.shape == (q.n_obs, 1)


def test_ensemble_surrogate_run_matches_exact_where_the_check_says_so(pbmc):
    """Real model, default method: cells labelled from exact vectors (fit, held-out, re-embedded)
    have exactly the exact run's labels; overall agreement meets the target it claims."""
    ref, query = pbmc
    exact = run_transfer(query, ref, LABEL, mode="onnx", clusters=query.obs["louvain"])
    emb = SurrogateEmbedder(Embedder_onnx(), n_fit=150, n_check=100, exact_below=0)
    result = run_transfer(query, ref, LABEL, embedder=emb, clusters=query.obs["louvain"])
    check = result.params["surrogate_check"]
    assert result.params["method"] == "ensemble" and check["label_function"] == "HeadLabelFunction"
    assert check["components"][:2] == ["probability margin", "unknown score to threshold"]
    last = emb._last
    exact_rows = ~last["predicted"]
    redo = result.query_embeddings  # refined per cell
    codes = last["codes"]
    from_exact = exact_rows[codes]
    first = np.unique(codes, return_index=True)[1]
    # sentences re-embedded by the check now carry the exact vectors
    exact_vec = exact.query_embeddings[first]
    same = np.isclose(np.sum(redo[first] * exact_vec, axis=1), 1.0, atol=1e-4)
    assert same.sum() >= (~last["predicted"]).sum() + check["reembedded"] - 1
    got, want = result.table["cell_type"].to_numpy(), exact.table["cell_type"].to_numpy()
    np.testing.assert_array_equal(got[from_exact | same[codes]], want[from_exact | same[codes]])
    if check["meets_target"]:
        assert (got == want).mean() >= check["target"], check


def Embedder_onnx():  # noqa: N802
    from napari_cellama.core.embed import Embedder

    return Embedder(mode="onnx")


def test_warns_when_the_target_cannot_be_shown(pbmc):
    q, r, q_emb, r_emb, labels, codes, clusters = _sides(pbmc)
    heads = fit_heads(r_emb, log_normalise(r.X), labels)
    query = CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes, clusters=clusters)
    fn = head_label_function(query, CellSet(r_emb, r.X, r.obs_names, labels=labels), TransferOptions(), heads)
    assert isinstance(fn, HeadLabelFunction)
    sentences = cell_sentences(q.X, list(q.var_names), 20)
    from napari_cellama.core._progress import run

    emb = _noisy_surrogate(HashEmbedder(), 0.5)
    emb.max_exact_share = 0.0  # no re-embedding allowed: a noisy surrogate cannot show 99%
    noisy = run(emb.iter_encode(sentences))
    with pytest.warns(SurrogateAgreementWarning, match="below the target"):
        run(iter_refine(emb, noisy, fn))
    assert emb.last_check["meets_target"] is False and emb.last_check["reembedded"] == 0
    # the same surrogate allowed to re-embed meets the target without a warning
    emb2 = _noisy_surrogate(HashEmbedder(), 0.5)
    noisy2 = run(emb2.iter_encode(sentences))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SurrogateAgreementWarning)
        run(iter_refine(emb2, noisy2, fn))
    assert emb2.last_check["meets_target"] is True


def test_cluster_evidence_is_computed_once_and_gives_the_same_table(pbmc, monkeypatch):
    from napari_cellama.core import unknown
    from napari_cellama.core._progress import run
    from napari_cellama.core.surrogate_label import ClusterEvidence

    q, r, q_emb, r_emb, labels, codes, clusters = _sides(pbmc)
    options = TransferOptions(unknown_alpha=0.4)
    heads = fit_heads(r_emb, log_normalise(r.X), labels)
    query = CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes, clusters=clusters)
    reference = CellSet(r_emb, r.X, r.obs_names, labels=labels)
    plain = run(iter_head_transfer(query, reference, options, heads=heads))
    evidence = ClusterEvidence(query, reference)
    assert evidence.novelty is not None and "cluster_novelty" in plain
    calls = []
    original = unknown.with_cluster_evidence
    monkeypatch.setattr(unknown, "with_cluster_evidence", lambda *a, **k: calls.append(1) or original(*a, **k))
    given = run(iter_head_transfer(query, reference, options, heads=heads, cluster_evidence=evidence))
    assert not calls
    pd.testing.assert_frame_equal(given, plain)
    # a surrogate run computes it once (the check's label function hands it to the transfer)
    from tests._hash_embedder import HashEmbedder

    ref, qry = pbmc
    emb = SurrogateEmbedder(HashEmbedder(), n_fit=60, n_check=40)
    emb.exact_below = 0
    result = run_transfer(qry, ref, LABEL, embedder=emb, clusters=qry.obs["louvain"])
    assert result.params["surrogate_check"]["predicted"] > 0
    assert len(calls) == 1


@pytest.mark.parametrize("coclustering", [True, False])
def test_label_function_judges_the_co_clustering_call(pbmc, coclustering):
    """A type left out of the reference (CD14+ monocytes): the joint reference + query clusters make
    its cells Unknown in the transfer, and the surrogate check's label function gives the same labels
    (it computes the cluster evidence, the joint clustering included, once - before any label)."""
    from napari_cellama.core._progress import run

    q, r, q_emb, r_emb, labels, codes, clusters = _sides(pbmc)
    keep = labels != "CD14+ Monocyte"
    options = TransferOptions(unknown_coclustering=coclustering)
    heads = fit_heads(r_emb[keep], log_normalise(r.X[keep]), labels[keep], method=options.method, c=options.head_c,
                      expression_weight=options.expression_weight, seed=options.seed)
    query = CellSet(q_emb, q.X, q.obs_names, sentence_codes=codes, clusters=clusters)
    reference = CellSet(r_emb[keep], r.X[keep], r.obs_names[keep], labels=labels[keep])
    table = run(iter_head_transfer(query, reference, options, heads=heads))
    got, _ = head_label_function(query, reference, options, heads)(q_emb)
    np.testing.assert_array_equal(got, table["cell_type"].to_numpy())
    mono = (query_labels := pbmc[1].obs[LABEL].astype(str).reindex(q.obs_names).to_numpy()) == "CD14+ Monocyte"
    share = (got[mono] == UNKNOWN).mean()
    if coclustering:  # the joint evidence is what calls them (the residual alone: none)
        assert "joint_enrichment" in table and share >= 0.5
        assert (got[~mono] == UNKNOWN).mean() <= 0.1 and len(set(query_labels)) > 5
    else:
        assert "joint_enrichment" not in table and share < 0.5
