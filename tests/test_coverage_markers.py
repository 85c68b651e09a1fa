"""Panel-coverage markers ranked as biologists do (issue 17 item 6): specific, no ribosomal or
mitochondrial genes, and the report says which markers the panel has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_cellama.core.coverage import coverage_text, marker_coverage
from napari_cellama.core.markers import is_ribo_mito, specific_markers

PBMC3K = Path("/work/shared/data/references/pbmc3k/pbmc3k.h5ad")
PANEL = Path("/work/shared/data/xenium_bone_marrow_crop/cell_feature_matrix/features.tsv.gz")


def test_ribo_mito_symbols():
    genes = ["RPL13", "RPS6", "Rps12", "RPLP0", "RPSA", "MRPL3", "MRPS7", "MT-CO1", "mt-Nd1",
             "RPL13A", "RPS4Y1", "RPL22L1", "CCR7", "RPGR", "MTOR", "SELL", "RPS6KA1"]
    mask = is_ribo_mito(genes)
    assert mask.tolist() == [True] * 12 + [False] * 5  # RPS6KA1 is a kinase, not a ribosomal protein


def test_specific_markers_need_specificity_and_fold_change():
    ranked = pd.DataFrame({
        "names": ["RPS12", "ACTB", "CCR7", "LOWFC", "SELL", "NEG"],
        "scores": [30.0, 20.0, 10.0, 9.0, 8.0, -1.0],
        "logfoldchanges": [2.0, 3.0, 2.0, 0.3, 1.5, 2.0],
        "pct_in": [1.0, 0.99, 0.8, 0.9, 0.7, 0.9],
        "pct_rest": [0.5, 0.98, 0.2, 0.2, 0.3, 0.1],
    })
    assert specific_markers(ranked, 10) == ["CCR7", "SELL"]
    assert specific_markers(ranked, 1) == ["CCR7"]
    assert specific_markers(ranked, 10, min_logfc=0.0) == ["CCR7", "LOWFC", "SELL"]


def test_marker_coverage_drops_a_ubiquitous_ribosomal_gene():
    import anndata as ad

    rng = np.random.default_rng(0)
    genes = ["RPS12", "RPL3", "MT-CO1", "G3", "G4", "G5", "G6", "G7"]
    x = rng.poisson(1.0, size=(60, 8)).astype(np.float32)
    x[:30, 0:3] += 40  # ribosomal / mito genes higher in A: ranked first by Wilcoxon, still excluded
    x[:30, 3] += 30  # G3: a real marker of A
    x[30:, 4] += 30  # G4: marker of B
    ref = ad.AnnData(X=x, obs=pd.DataFrame({"t": pd.Categorical(["A"] * 30 + ["B"] * 30)},
                                           index=[str(i) for i in range(60)]))
    ref.var_names = genes
    cov = marker_coverage(ref, "t", ["G3", "RPS12"], n_markers=5).set_index("cell_type")
    assert cov.loc["A", "markers_in_panel"] == ["G3"] and cov.loc["A", "n_markers"] == 1
    assert cov.loc["B", "markers_missing"] == ["G4"]
    line = coverage_text(cov.reset_index().iloc[0])
    assert line.startswith(("A: 1/1 present: G3; missing: none", "B: 0/1 present: none; missing: G4"))


@pytest.mark.skipif(not (PBMC3K.exists() and PANEL.exists()), reason="needs pbmc3k and the bone-marrow panel")
def test_pbmc3k_markers_on_the_bone_marrow_panel():
    import anndata as ad

    features = pd.read_csv(PANEL, sep="\t", header=None)
    panel = features.loc[features[2] == "Gene Expression", 1].tolist()
    ref = ad.read_h5ad(PBMC3K)
    cov = marker_coverage(ref, "cell_type", panel).set_index("cell_type")
    for t, row in cov.iterrows():
        genes = list(row["markers_in_panel"]) + list(row["markers_missing"])
        assert genes and not is_ribo_mito(genes).any(), (t, genes)
    naive = cov.loc["Naive CD4 T"]
    assert {"CCR7", "SELL", "LEF1"} & set(naive["markers_in_panel"])
    assert "CD3E" in naive["markers_in_panel"] or "CD3D" in naive["markers_in_panel"]
    text = coverage_text(naive.rename(index=None).to_dict() | {"cell_type": "Naive CD4 T"})
    assert text.startswith("Naive CD4 T: ") and "present: " in text and "CCR7" in text
