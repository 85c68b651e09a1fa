"""Niche sentences and niche clustering (issue 5).

Unit tests of the spatial neighbours (against brute force), the sentence template,
the composition and the clustering pieces, then the evidence on the demo run: for
a cell type planted in several neighbourhoods, niche clustering with the true cell
types as neighbour labels recovers the planted niches (ARI >= 0.6) and the gene
sentence alone does clearly worse. Finally the CLI end to end on the demo, and its
one-line errors.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from napari_cellama._constants import (
    CELL_ID,
    CELL_TYPE,
    MARKER_COLUMNS,
    NICHE_CLUSTER,
    NICHE_SENTENCE,
    NO_NEIGHBORS_SENTENCE,
    UNASSIGNED,
)
from napari_cellama.cli import main
from napari_cellama.core.clustering import cluster_embeddings
from napari_cellama.core.markers import log_normalize, niche_markers
from napari_cellama.core.niche import format_niche_sentences, recluster, run_niches
from napari_cellama.core.options import KMeans, Leiden, NicheOptions
from napari_cellama.core.spatial import SpatialNeighbors, neighbor_composition, spatial_neighbors
from napari_cellama.validators import CellamaInputError, check_niche_labels

# ----------------------------------------------------------------------------- neighbours


def _brute(xy):
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(1).uniform(0, 150, size=(200, 2))


def test_k_nearest_match_brute_force(points):
    d = _brute(points)
    nb = spatial_neighbors(points, k=7)
    assert isinstance(nb, SpatialNeighbors) and len(nb) == 200
    assert (nb.counts == 7).all()
    for i in range(200):
        idx, dist = nb.row(i)
        assert i not in idx
        np.testing.assert_array_equal(idx, np.argsort(d[i])[:7])  # random floats: no ties
        np.testing.assert_allclose(dist, d[i, idx])
        assert (np.diff(dist) >= 0).all()


def test_radius_match_brute_force(points):
    d = _brute(points)
    for r, chunk in ((9.0, 4096), (15.0, 23)):  # small chunks exercise the chunked path
        nb = spatial_neighbors(points, radius=r, chunk=chunk)
        if r == 9.0:
            assert (nb.counts == 0).any()  # isolated cells: the empty-row path is exercised
        for i in range(200):
            idx, dist = nb.row(i)
            assert set(idx.tolist()) == set(np.flatnonzero(d[i] <= r).tolist())
            np.testing.assert_allclose(dist, d[i, idx])
            assert (np.diff(dist) >= 0).all()


def test_radius_is_inclusive_and_self_excluded():
    grid = np.array([[x, y] for x in range(5) for y in range(5)], dtype=float)
    nb = spatial_neighbors(grid, radius=1.0)
    centre = 12  # (2, 2): four neighbours at exactly 1 um
    idx, dist = nb.row(centre)
    assert sorted(idx.tolist()) == [7, 11, 13, 17] and np.allclose(dist, 1.0)
    assert nb.counts[0] == 2  # a corner


def test_query_subset_duplicates_and_cap():
    xy = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    nb = spatial_neighbors(xy, k=2, query=np.array([1, 3]))
    idx, dist = nb.row(0)
    assert idx.tolist() == [0, 2] and dist.tolist() == [0.0, 3.0]  # the other cell at the same spot
    assert nb.row(1)[0].tolist() == [2, 0] or nb.row(1)[0].tolist() == [2, 1]
    capped = spatial_neighbors(xy, k=50)
    assert (capped.counts == 3).all()


def test_neighbourhood_arguments_are_checked(points):
    with pytest.raises(CellamaInputError, match="not both"):
        spatial_neighbors(points, k=5, radius=10.0)
    with pytest.raises(CellamaInputError, match="radius"):
        spatial_neighbors(points, radius=-1)
    with pytest.raises(CellamaInputError, match="positive whole number"):
        spatial_neighbors(points, k=0)


# ----------------------------------------------------------------------------- sentences


def test_sentence_template_exact():
    types = ["Fibroblast", "T cell", "Epithelial"]
    indptr = np.array([0, 4, 5, 5])
    codes = np.array([0, 1, 1, 2, 2])
    genes = ["Top genes are A, B, and C.", "Top gene is D.", "No genes are detected."]
    assert format_niche_sentences(types, indptr, codes, gene_sentences=genes) == [
        "Top genes are A, B, and C. Nearest cells are Fibroblast, T cell, T cell, Epithelial.",
        "Top gene is D. Nearest cell is Epithelial.",
        "No genes are detected. " + NO_NEIGHBORS_SENTENCE,
    ]
    assert format_niche_sentences(types, indptr, codes) == [
        "Nearest cells are Fibroblast, T cell, T cell, Epithelial.",
        "Nearest cell is Epithelial.",
        "No cells are nearby.",
    ]
    assert format_niche_sentences(types, np.array([0]), np.array([], dtype=int)) == []


def test_count_truncated_uses_the_models_limit():
    from napari_cellama.core import Embedder
    from napari_cellama.core.truncation import count_truncated

    embedder = Embedder()
    long = "Nearest cells are " + ", ".join(["CD4+/CD45RA+/CD25- Naive T"] * 30) + "."
    n, limit = count_truncated(embedder, ["Top gene is A. Nearest cell is B.", long, long])
    assert (n, limit) == (1, 256)  # the long sentence once (identical sentences count once)
    assert not embedder.loaded  # the tokenizer alone answers


# ----------------------------------------------------------------------------- composition, clusters, markers


def test_neighbor_composition_rows_sum_to_one():
    nb = SpatialNeighbors(np.array([0, 3, 3, 5]), np.array([1, 2, 3, 0, 0]), np.zeros(5))
    codes = np.array([0, 1, 1, 2])
    comp = neighbor_composition(nb, codes, 3).toarray()
    np.testing.assert_allclose(comp, [[0, 2 / 3, 1 / 3], [0, 0, 0], [1, 0, 0]])


def test_cluster_embeddings_kmeans_and_leiden():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 5
    truth = np.repeat([0, 1, 2], [60, 40, 20])
    emb = (centres[truth] + rng.normal(size=(120, 32))).astype(np.float32)
    km = cluster_embeddings(emb, "kmeans", n_clusters=3)
    assert list(km.categories) == ["0", "1", "2"]
    assert pd.Series(km).value_counts().tolist() == [60, 40, 20]  # named by decreasing size
    assert adjusted_rand_score(truth, km) == 1.0
    ld = cluster_embeddings(emb, "leiden", resolution=0.3)
    assert adjusted_rand_score(truth, ld) == 1.0
    with pytest.raises(CellamaInputError, match="clustering method"):
        cluster_embeddings(emb, "dbscan")


def test_markers_find_the_planted_gene():
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(80, 12)).astype(np.float32)
    x[:40, 5] += 20  # gene G5 marks cluster "0"
    x[40:, 9] += 20  # gene G9 marks cluster "1"
    clusters = pd.Categorical(np.repeat(["0", "1"], 40))
    m = niche_markers(sp.csr_matrix(x), [f"G{i}" for i in range(12)], clusters, n_markers=3)
    assert list(m.columns) == list(MARKER_COLUMNS)
    assert m.groupby(NICHE_CLUSTER)["gene"].first().to_dict() == {"0": "G5", "1": "G9"}
    assert (m.groupby(NICHE_CLUSTER).size() == 3).all()
    norm = log_normalize(x)
    totals = np.expm1(norm.toarray()).sum(axis=1)
    np.testing.assert_allclose(totals, np.median(x.sum(axis=1)), rtol=1e-4)


def test_label_alignment():
    ids = pd.Index(["a", "b", "c"])
    aligned, missing = check_niche_labels(pd.Series({"a": "T", "b": "B", "x": "T"}), ids, UNASSIGNED)
    assert aligned.tolist() == ["T", "B", UNASSIGNED] and missing == 1
    with pytest.raises(CellamaInputError, match="none of the"):
        check_niche_labels(pd.Series({"x": "T", "y": "B"}), ids, UNASSIGNED)
    with pytest.raises(CellamaInputError, match="only 1 of"):
        check_niche_labels(pd.Series({"a": "T", "y": "B"}), ids, UNASSIGNED)


# ----------------------------------------------------------------------------- demo evidence

MAX_CELLS = 300  # cap on sentences embedded per run (the demo has 256 CD14+ monocytes)


@pytest.fixture(scope="module")
def demo(demo_data):
    from napari_cellama.io import read_query

    d = demo_data  # conftest: built once per session in a temporary cache
    query = read_query(d.xenium_dir)
    truth = pd.read_csv(d.truth_csv, dtype=str).set_index(CELL_ID)
    truth = truth.reindex(query.obs_names.astype(str))
    assert truth[CELL_TYPE].notna().all()
    # the cell type planted in the most neighbourhoods (ties: the most cells)
    per_type = truth.groupby(CELL_TYPE)["niche"].agg(["nunique", "size"])
    per_type = per_type[per_type["nunique"] >= 2].sort_values(["nunique", "size"], ascending=False)
    assert len(per_type), "the demo must plant a cell type in two or more neighbourhoods"
    return d, query, truth, str(per_type.index[0])


@pytest.fixture(scope="module")
def demo_runs(demo):
    from napari_cellama.core import Embedder

    _, query, truth, cell_type = demo
    n_niches = truth.loc[truth[CELL_TYPE] == cell_type, "niche"].nunique()
    embedder = Embedder()
    runs = {
        mode: run_niches(query, truth[CELL_TYPE], [cell_type], mode=mode, n_clusters=n_niches,
                         embedder=embedder, max_cells=MAX_CELLS)
        for mode in ("genes+niche", "genes")
    }
    return runs, n_niches


def _ari(result, truth):
    return adjusted_rand_score(truth.loc[result.table.index, "niche"], result.clusters)


def test_niche_clusters_recover_planted_niches(demo, demo_runs):
    _, _, truth, cell_type = demo
    runs, n_niches = demo_runs
    ari_niche, ari_genes = _ari(runs["genes+niche"], truth), _ari(runs["genes"], truth)
    print(f"\n{cell_type}: {n_niches} planted niches; ARI genes+niche {ari_niche:.3f}, genes only {ari_genes:.3f}")
    assert ari_niche >= 0.6
    assert ari_genes <= ari_niche - 0.3


def test_demo_result_tables(demo, demo_runs):
    _, query, truth, cell_type = demo
    r = demo_runs[0]["genes+niche"]
    assert len(r.table) == min(MAX_CELLS, int((truth[CELL_TYPE] == cell_type).sum()))
    assert (r.table[CELL_TYPE] == cell_type).all()
    assert r.table.index.isin(query.obs_names).all() and r.table.index.name == CELL_ID
    assert r.embeddings.shape[0] == len(r.table)
    first = r.table[NICHE_SENTENCE].iloc[0]
    assert first.startswith("Top gene") and " Nearest cells are " in first and first.endswith(".")
    np.testing.assert_allclose(r.composition.sum(axis=1), 1.0)
    np.testing.assert_allclose(r.cell_composition.sum(axis=1), 1.0)
    assert r.sizes.sum() == len(r.table)
    assert set(r.markers[NICHE_CLUSTER]) <= set(r.composition.index)
    full = r.clusters_for(query.obs_names)
    assert full.notna().sum() == len(r.table)


def test_recluster_reuses_embeddings(demo, demo_runs):
    _, query, truth, _ = demo
    r = demo_runs[0]["genes+niche"]
    again = recluster(r, query, resolution=0.3)
    assert again.embeddings is r.embeddings and again.table.index.equals(r.table.index)
    assert again.params["method"] == "leiden" and again.params["resolution"] == 0.3
    assert again.sizes.sum() == len(r.table)
    np.testing.assert_allclose(again.composition.sum(axis=1), 1.0)
    same = recluster(r, query, n_clusters=r.params["n_clusters"])
    assert (same.clusters.astype(str) == r.clusters.astype(str)).all()  # same KMeans, same answer
    # results carry their options: the run's, then the new clustering on the same neighbourhood
    assert r.options == NicheOptions(clustering=KMeans(r.params["n_clusters"]), max_cells=r.params["max_cells"])
    assert again.options == r.options.replace(clustering=Leiden(0.3))
    assert {k: again.params[k] for k in again.options.flat()} == again.options.flat()
    by_options = recluster(r, query, clustering=Leiden(0.3))
    assert (by_options.clusters.astype(str) == again.clusters.astype(str)).all()
    print(f"\nLeiden resolution 0.3 on the same embeddings: ARI {_ari(again, truth):.3f}, "
          f"{len(again.sizes)} clusters")


# ----------------------------------------------------------------------------- CLI


def test_cli_end_to_end_on_demo(demo, tmp_path):
    d, _, truth, cell_type = demo
    out = tmp_path / "niches.csv"
    r = subprocess.run(
        [sys.executable, "-m", "napari_cellama.cli", "niche", str(d.xenium_dir), "--labels", str(d.truth_csv),
         "--cell-types", cell_type, "--neighbors", "10", "--n-clusters", "2", "--niche-only",
         "--max-cells", "150", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, dtype={NICHE_CLUSTER: str})
    assert list(df.columns) == [CELL_ID, NICHE_CLUSTER] and len(df) == 150
    assert set(truth.loc[df[CELL_ID], CELL_TYPE]) == {cell_type}
    comp = pd.read_csv(tmp_path / "niches.composition.csv", index_col=NICHE_CLUSTER)
    assert comp["n_cells"].sum() == 150
    np.testing.assert_allclose(comp.drop(columns="n_cells").sum(axis=1), 1.0, atol=1e-5)
    markers = pd.read_csv(tmp_path / "niches.markers.csv")
    assert list(markers.columns) == list(MARKER_COLUMNS)
    assert "embedding niches" in r.stderr and r.stdout == ""


@pytest.fixture(scope="module")
def other_labels(demo, tmp_path_factory):
    """Labels of another run: the right cell type names, but none of the query's cell ids."""
    p = tmp_path_factory.mktemp("labels") / "other.csv"
    pd.DataFrame({CELL_ID: ["zz-1", "zz-2"], CELL_TYPE: [demo[3], "T cell"]}).to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cell-types", "No such type"], "not in the labels"),
        (["--neighbors", "5", "--radius", "20"], "not both"),
        (["--resolution", "1", "--n-clusters", "3"], "not both"),
        (["--radius", "-3"], "radius must be a positive"),
        (["--niche-only", "--genes-only"], "at most one of"),
        ("OTHER_LABELS", "none of the 2 labelled cell ids"),
    ],
)
def test_cli_bad_input_one_line_exit_2(demo, other_labels, tmp_path, capsys, extra, message):
    d, _, _, cell_type = demo
    labels = str(d.truth_csv)
    if extra == "OTHER_LABELS":
        labels, extra = str(other_labels), []
    args = ["niche", str(d.xenium_dir), "--labels", labels, "--out", str(tmp_path / "o.csv")]
    if "--cell-types" not in extra:
        args += ["--cell-types", cell_type]
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("napari-cellama: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o.csv").exists()
