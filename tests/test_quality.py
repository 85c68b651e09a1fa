"""Issue 14: the default ensemble, the Unknown call and the fit report, on real PBMCs with the real model.

Small inputs (pbmc68k_reduced, 700 cells); not timed. The benchmarks (benchmarks/quality_*.py)
hold the full evidence; these tests guard its direction.
"""

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from napari_cellama._constants import (
    CELL_TYPE,
    REASON_NO_GENES,
    REASON_UNKNOWN,
    SENTENCE,
    UNASSIGNED,
    UNASSIGNED_REASON,
    UNKNOWN,
    UNKNOWN_SCORE,
)
from napari_cellama.core import (
    TransferOptions,
    apply_threshold,
    apply_unknown,
    knn_transfer,
    reference_fit_report,
    run_transfer,
)
from napari_cellama.io import expression_for_sentences
from napari_cellama.validators import CellamaInputError

LABEL = "bulk_labels"
MISSING = "CD19+ B"


def _f1(truth, pred):
    return f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0)


@pytest.fixture(scope="module")
def split():
    adata = expression_for_sentences(sc.datasets.pbmc68k_reduced())
    ref_idx, q_idx = train_test_split(np.arange(adata.n_obs), test_size=0.5,
                                      stratify=adata.obs[LABEL], random_state=0)
    return adata[q_idx].copy(), adata[ref_idx].copy()


@pytest.fixture(scope="module")
def results(split):
    query, ref = split
    return {m: run_transfer(query, ref, LABEL, options=TransferOptions(method=m)) for m in ("ensemble", "knn")}


@pytest.fixture(scope="module")
def without_b(split):
    query, ref = split
    ref = ref[ref.obs[LABEL].astype(str) != MISSING].copy()
    return run_transfer(query, ref, LABEL)


def test_ensemble_beats_the_knn_vote(split, results):
    truth = split[0].obs[LABEL].astype(str)
    ens = _f1(truth, results["ensemble"].table.loc[truth.index, CELL_TYPE])
    knn = _f1(truth, results["knn"].table.loc[truth.index, CELL_TYPE])
    print(f"pbmc68k seed 0 macro-F1: ensemble {ens:.3f}, knn {knn:.3f}")
    assert ens > knn + 0.05
    assert ens > 0.6


def test_results_record_method_and_parameters(results):
    params = results["ensemble"].params
    assert params["method"] == "ensemble"
    assert params["options"] == TransferOptions().to_dict()
    assert results["knn"].params["options"]["method"] == "knn"


def test_knn_method_gives_the_papers_labels(results):
    """--method knn: exactly the labels of the plain cosine kNN vote (no Unknown call)."""
    res = results["knn"]
    direct = knn_transfer(res.query_embeddings, res.reference_embeddings, res.reference_labels.to_numpy(), k=10)
    assert (res.table[CELL_TYPE].to_numpy() == direct[CELL_TYPE].to_numpy()).all()
    assert not (res.table[CELL_TYPE] == UNKNOWN).any()
    assert res.table[UNKNOWN_SCORE].between(0, 1).all()  # the score is there to apply afterwards


def test_missing_type_gets_high_unknown_scores(split, without_b):
    """B cells removed from the reference: their scores rank high and they are called Unknown
    far more often than the cells of types the reference has."""
    truth = split[0].obs[LABEL].astype(str)
    t = without_b.table.loc[truth.index]
    missing = (truth == MISSING).to_numpy()
    auroc = roc_auc_score(missing, t[UNKNOWN_SCORE].to_numpy())
    unknown = (t[CELL_TYPE] == UNKNOWN).to_numpy()
    print(f"B left out: AUROC {auroc:.3f}, Unknown {unknown[missing].mean():.2f} of B vs {unknown[~missing].mean():.3f}")
    assert auroc > 0.85
    # the query-relative call (docs/quality.md): measured 0.10 of B vs 0.003 on this 350-cell
    # query (the B cluster's residual is 3.2 times the typical cluster's, just under the default
    # level's 3.5; the absolute call before it made more than 30% Unknown, and 7% of a
    # cross-donor query of present types)
    assert unknown[missing].mean() > 0.05
    assert unknown[missing].mean() > 10 * unknown[~missing].mean()
    assert unknown[~missing].mean() < 0.05
    assert (t.loc[unknown, UNASSIGNED_REASON] == REASON_UNKNOWN).all()


def test_unknown_threshold_moves_without_recomputing(without_b):
    t = without_b.table.copy()
    n_default = int((t[CELL_TYPE] == UNKNOWN).sum())
    apply_unknown(t, 0.3)
    assert (t[CELL_TYPE] == UNKNOWN).sum() > n_default
    apply_unknown(t, None)
    assert not (t[CELL_TYPE] == UNKNOWN).any()
    assert (t[CELL_TYPE] == t["transferred_type"]).all()
    apply_unknown(t, 0.05, min_confidence=0.99)
    assert set(t.loc[t[CELL_TYPE] == UNASSIGNED, UNASSIGNED_REASON]) == {"low confidence"}
    # the Annotation's threshold function keeps the recorded Unknown call
    assert (apply_threshold(t, 0.0) == UNKNOWN).sum() == (t[CELL_TYPE] == UNKNOWN).sum()


def test_cells_without_shared_genes_stay_unassigned_with_their_reason(split):
    query, ref = split
    q = query[:40].copy()
    x = q.X.toarray() if hasattr(q.X, "toarray") else np.array(q.X)
    x[:3] = 0
    q.X = x
    t = run_transfer(q, ref, LABEL, options=TransferOptions(unknown_alpha=0.9)).table
    assert (t[CELL_TYPE].iloc[:3] == UNASSIGNED).all()
    assert (t[UNASSIGNED_REASON].iloc[:3] == REASON_NO_GENES).all()
    assert t[UNKNOWN_SCORE].iloc[:3].isna().all()
    apply_unknown(t, 0.9)
    assert (t[CELL_TYPE].iloc[:3] == UNASSIGNED).all()
    assert t[SENTENCE].iloc[0] == "No genes are detected."


def test_fit_report_flags_the_missing_type(split, without_b):
    query, _ = split
    clusters = query.obs[LABEL].astype(str)
    report = reference_fit_report(without_b.table, query, clusters)
    t = report.table
    assert set(t["cluster"]) == set(clusters)
    assert t["n_cells"].sum() == query.n_obs
    assert t.iloc[0]["cluster"] == MISSING  # sorted: the most Unknown cluster first
    assert t.set_index("cluster").loc[MISSING, "share_unknown"] > 0.05  # 0.10 measured, see above
    assert t["top_markers"].str.len().gt(0).all()
    assert "possibly missing" in report.summary() or "no cluster" in report.summary()


def test_fit_report_clusters_by_leiden_without_given_clusters(split, results):
    query, _ = split
    report = reference_fit_report(results["ensemble"].table, query)
    assert report.cluster_source.startswith("Leiden")
    assert report.table["n_cells"].sum() == query.n_obs
    assert report.table["cluster"].nunique() >= 3


def test_transfer_options_are_checked():
    with pytest.raises(CellamaInputError, match="method"):
        TransferOptions(method="svm")
    with pytest.raises(CellamaInputError):
        TransferOptions(unknown_alpha=1.5)
    with pytest.raises(CellamaInputError):
        TransferOptions(expression_weight=-0.1)
    o = TransferOptions(metadata=["phase"])
    assert o.metadata == ("phase",) and o.to_dict()["metadata"] == ["phase"]
    assert not TransferOptions(method="knn").calls_unknown
    assert pd.Series(o.to_dict()).index.is_unique


def test_annotation_and_exports_show_unknown_cells():
    from napari_cellama.core import Annotation

    t = pd.DataFrame({"transferred_type": ["B", "NK", "B"], "confidence": [0.9, 0.8, 0.3],
                      "distance": [0.1, 0.1, 0.1], "runner_up": ["", "", ""], UNKNOWN_SCORE: [0.2, 0.99, 0.5],
                      UNASSIGNED_REASON: ["", REASON_UNKNOWN, ""]}, index=pd.Index(["a", "b", "c"], name="cell_id"))
    a = Annotation(t)
    assert a.cell_type.tolist() == ["B", UNKNOWN, "B"]
    a.set_threshold(0.5)
    assert a.cell_type.tolist() == ["B", UNKNOWN, UNASSIGNED]
