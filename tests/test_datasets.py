"""The demo generator: real Xenium layout, held-out query cells, planted niches, determinism."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
import tifffile
import zarr

from napari_cellama.datasets import (
    CACHE_ENV,
    DEMO_NAME,
    PIXEL_SIZE,
    cache_root,
    counts_from_lognorm,
    decode_cell_ids,
    encode_cell_ids,
    iter_make_demo,
    make_demo,
)


def _zarr(path):
    return zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r")


def _sdata(path):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata_io.xenium(path)  # default arguments, as a user would call it


def test_spatialdata_io_reads_demo_with_defaults(demo_data):
    from spatialdata.transformations import Identity, Scale, get_transformation

    sdata = _sdata(demo_data.xenium_dir)
    truth = pd.read_csv(demo_data.truth_csv)
    table = sdata.tables["table"]
    assert table.n_obs == len(truth) > 500
    assert table.n_vars == 300
    assert list(table.obs["cell_id"]) == list(truth["cell_id"])
    # the table is linked to the cell-label raster, one label per cell
    assert table.uns["spatialdata_attrs"]["instance_key"] == "cell_labels"
    assert np.array_equal(table.obs["cell_labels"].to_numpy(), np.arange(1, len(truth) + 1))
    for name in ("morphology_focus",):
        assert isinstance(get_transformation(sdata.images[name]), Identity)
    for name in ("cell_labels", "nucleus_labels"):
        assert isinstance(get_transformation(sdata.labels[name]), Identity)
    for element in (
        sdata.shapes["cell_boundaries"],
        sdata.shapes["nucleus_boundaries"],
        sdata.points["transcripts"],
    ):
        t = get_transformation(element)
        assert isinstance(t, Scale)
        np.testing.assert_allclose(t.scale, [1 / PIXEL_SIZE, 1 / PIXEL_SIZE])
    assert len(sdata.shapes["cell_boundaries"]) == len(truth)
    assert list(sdata.images["morphology_focus"]["scale0"]["image"].coords["c"].values) == ["DAPI"]


def test_demo_files_have_the_real_xenium_structure(demo_data, crop_dir):
    demo, real = demo_data.xenium_dir, crop_dir
    for name in (
        "cells.parquet",
        "cell_boundaries.parquet",
        "nucleus_boundaries.parquet",
        "transcripts.parquet",
    ):
        assert (
            pq.read_schema(demo / name).remove_metadata()
            == pq.read_schema(real / name).remove_metadata()
        ), name
    assert set(json.loads((demo / "experiment.xenium").read_text())) == set(
        json.loads((real / "experiment.xenium").read_text())
    )

    with (
        h5py.File(demo / "cell_feature_matrix.h5") as d,
        h5py.File(real / "cell_feature_matrix.h5") as r,
    ):
        assert set(d.attrs) == set(r.attrs)
        names_d, names_r = [], []
        d.visit(names_d.append)
        r.visit(names_r.append)
        assert sorted(names_d) == sorted(names_r)
        for key in names_r:
            if isinstance(r[key], h5py.Dataset):
                assert d[key].dtype.kind == r[key].dtype.kind, key
        assert set(d["matrix/features/feature_type"][:].astype(str)) == set(
            r["matrix/features/feature_type"][:].astype(str)
        )

    zd, zr = _zarr(demo / "cells.zarr.zip"), _zarr(real / "cells.zarr.zip")
    assert set(zd.attrs) == set(zr.attrs)
    arrays_d = {k: (v.dtype, v.ndim) for k, v in zd.arrays()}
    arrays_r = {k: (v.dtype, v.ndim) for k, v in zr.arrays()}
    assert arrays_d == arrays_r
    for sub in ("masks", "polygon_sets/0", "polygon_sets/1"):
        assert {k: (v.dtype, v.ndim) for k, v in zd[sub].arrays()} == {
            k: (v.dtype, v.ndim) for k, v in zr[sub].arrays()
        }
    assert zd["cell_summary"].attrs["column_names"] == zr["cell_summary"].attrs["column_names"]
    np.testing.assert_allclose(
        zd["masks/homogeneous_transform"][:], np.diag([1 / PIXEL_SIZE] * 2 + [1, 1]), rtol=1e-6
    )
    assert all(
        i.compress_type == zipfile.ZIP_STORED
        for i in zipfile.ZipFile(demo / "cells.zarr.zip").infolist()
    )

    with tifffile.TiffFile(demo / "morphology_focus" / "morphology_focus_0000.ome.tif") as tif:
        assert tif.is_ome and tif.pages[0].is_tiled
        levels = tif.series[0].levels
        assert len(levels) >= 3
        assert all(
            levels[i + 1].shape[0] == -(-levels[i].shape[0] // 2) for i in range(len(levels) - 1)
        )
        assert (
            f'PhysicalSizeX="{PIXEL_SIZE}"' in tif.ome_metadata
            and 'Name="DAPI"' in tif.ome_metadata
        )


def test_demo_matrix_transcripts_masks_and_image_agree(demo_data):
    x = demo_data.xenium_dir
    cells = pd.read_parquet(x / "cells.parquet")
    tx = pd.read_parquet(x / "transcripts.parquet")
    with h5py.File(x / "cell_feature_matrix.h5") as f:
        m = f["matrix"]
        mat = sp.csc_matrix(
            (m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:])
        ).T.tocsr()
        names = m["features/name"][:].astype(str)
        types = m["features/feature_type"][:].astype(str)
        barcodes = m["barcodes"][:].astype(str)
    assert list(barcodes) == list(cells["cell_id"])
    # the matrix is what XOA derives from the transcripts: qv >= 20, assigned to a cell
    counted = tx[(tx["qv"] >= 20) & (tx["cell_id"] != "UNASSIGNED")]
    rebuilt = pd.crosstab(counted["cell_id"], counted["feature_name"]).reindex(
        index=barcodes, columns=names, fill_value=0
    )
    assert np.array_equal(rebuilt.to_numpy(), mat.toarray())
    assert (tx["qv"] < 20).sum() > 0 and (tx["cell_id"] == "UNASSIGNED").sum() > 0
    gene = types == "Gene Expression"
    assert np.array_equal(
        cells["transcript_counts"].to_numpy(), np.asarray(mat[:, gene].sum(axis=1)).ravel()
    )
    assert np.array_equal(cells["total_counts"].to_numpy(), np.asarray(mat.sum(axis=1)).ravel())
    assert np.median(cells["transcript_counts"]) > 50  # Xenium-like depth after thinning

    z = _zarr(x / "cells.zarr.zip")
    cell_mask, nuc_mask = z["masks/1"][:], z["masks/0"][:]
    labels = np.arange(1, len(cells) + 1)
    # every transcript lies in the mask of the cell it is assigned to
    assigned = tx[tx["cell_id"] != "UNASSIGNED"]
    r = (assigned["y_location"].to_numpy(np.float64) / PIXEL_SIZE).astype(int)
    c = (assigned["x_location"].to_numpy(np.float64) / PIXEL_SIZE).astype(int)
    lab_of = dict(zip(cells["cell_id"], labels))
    assert np.array_equal(cell_mask[r, c], assigned["cell_id"].map(lab_of).to_numpy())
    # centroids inside their own cell, nuclei inside their own cell
    cr = (cells["y_centroid"].to_numpy() / PIXEL_SIZE).astype(int)
    cc = (cells["x_centroid"].to_numpy() / PIXEL_SIZE).astype(int)
    assert np.array_equal(cell_mask[cr, cc], labels)
    inside = nuc_mask > 0
    assert np.array_equal(nuc_mask[inside], cell_mask[inside])
    assert len(np.unique(nuc_mask[inside])) == len(cells)
    # the DAPI image shows the nuclei where the masks put them
    with tifffile.TiffFile(x / "morphology_focus" / "morphology_focus_0000.ome.tif") as tif:
        img = tif.series[0].levels[0].asarray().astype(float)
    assert img.shape == cell_mask.shape
    nucleus_mean = img[inside].mean()
    cytoplasm_mean = img[(cell_mask > 0) & ~inside].mean()
    background_mean = img[cell_mask == 0].mean()
    assert nucleus_mean > 4 * cytoplasm_mean and cytoplasm_mean > background_mean


def test_query_cells_are_held_out_from_the_reference(demo_data):
    """Every spatial cell's nearest pbmc68k profile is a held-out cell, never a reference cell."""
    import anndata as ad
    import scanpy as sc

    from napari_cellama.io import read_xenium_table

    query = read_xenium_table(demo_data.xenium_dir)
    reference = ad.read_h5ad(demo_data.reference_h5ad)
    pbmc = sc.datasets.pbmc68k_reduced()
    truth = pd.read_csv(demo_data.truth_csv).set_index("cell_id").loc[query.obs_names]

    assert sorted(reference.obs["cell_type"].cat.categories) == sorted(
        pbmc.obs["bulk_labels"].unique()
    )
    xr = reference.X.toarray() if sp.issparse(reference.X) else reference.X
    assert np.array_equal(xr, np.round(xr)) and xr.min() >= 0  # raw counts
    assert reference.n_vars == pbmc.raw.n_vars and query.n_vars == 300
    held = ~pd.Index(pbmc.obs_names).isin(reference.obs_names)
    assert 0.45 < held.mean() < 0.55
    # each type is split, none goes wholly to one side
    per_type = pd.crosstab(pbmc.obs["bulk_labels"], held)
    assert (per_type > 0).all().all()

    counts = counts_from_lognorm(pbmc.raw.X)[
        :, pd.Index(pbmc.raw.var_names).get_indexer(query.var_names)
    ]

    def unit(a):
        a = np.log1p(a / np.maximum(a.sum(1, keepdims=True), 1) * 1e4)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)

    best = (unit(query.X.toarray().astype(float)) @ unit(counts.toarray().astype(float)).T).argmax(
        axis=1
    )
    assert held[best].all(), f"{(~held[best]).sum()} spatial cells match a reference cell best"
    assert (pbmc.obs["bulk_labels"].to_numpy()[best] == truth["cell_type"].to_numpy()).mean() > 0.95


def test_planted_niches_give_types_distinct_neighbourhoods(demo_data):
    from scipy.spatial import cKDTree

    cells = pd.read_parquet(demo_data.xenium_dir / "cells.parquet").set_index("cell_id")
    truth = pd.read_csv(demo_data.truth_csv).set_index("cell_id").loc[cells.index]
    assert set(truth["niche"]) == {"follicle", "paracortex", "medulla"}
    multi = truth.groupby("cell_type")["niche"].agg(lambda s: (s.value_counts() >= 20).sum())
    assert (multi >= 2).sum() >= 2, (
        multi
    )  # at least two types each in two or more niches (>= 20 cells)
    assert multi["CD14+ Monocyte"] == 3
    # what surrounds a monocyte differs by niche: B cells in follicles, T/NK cells in the paracortex
    xy = cells[["x_centroid", "y_centroid"]].to_numpy()
    _, nn = cKDTree(xy).query(xy, k=11)
    types = truth["cell_type"].to_numpy()
    is_t = pd.Series(types).str.contains(r"T|NK").to_numpy()
    mono = np.flatnonzero(types == "CD14+ Monocyte")
    frac_b = (types[nn[mono, 1:]] == "CD19+ B").mean(axis=1)
    frac_t = is_t[nn[mono, 1:]].mean(axis=1)
    niche = truth["niche"].to_numpy()[mono]
    assert frac_b[niche == "follicle"].mean() > 0.5 > frac_b[niche == "paracortex"].mean() + 0.3
    assert frac_t[niche == "paracortex"].mean() > 0.45 > frac_t[niche == "follicle"].mean() + 0.3
    # expression does not encode the niche: the same held-out profiles feed every niche
    assert "types_in_several_niches" in demo_data.manifest


def test_cell_id_encoding_matches_spatialdata_io():
    from spatialdata_io.readers.xenium import cell_id_str_from_prefix_suffix_uint32

    prefixes = np.array([0, 1, 0xABCDEF01, 2**32 - 1, 103944710], dtype=np.uint32)
    ours = encode_cell_ids(prefixes)
    assert list(ours) == list(
        cell_id_str_from_prefix_suffix_uint32(prefixes, np.ones(5, dtype=np.uint32))
    )
    assert ours[-1] == "agdcbcag-1"  # the real crop's first cell
    back, suffix = decode_cell_ids(ours)
    assert np.array_equal(back, prefixes) and (suffix == 1).all()


def test_counts_from_lognorm_recovers_integers():
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    counts = counts_from_lognorm(pbmc.raw.X)
    assert counts.dtype == np.int32 and counts.min() >= 0
    assert (counts.data == counts.data.astype(int)).all()
    # log-normalising the counts again gives back the stored values (same within-cell ranking)
    x = counts.toarray().astype(float)
    renorm = np.log1p(
        x / x.sum(1, keepdims=True) * np.expm1(pbmc.raw.X.toarray()).sum(1, keepdims=True)
    )
    np.testing.assert_allclose(renorm, pbmc.raw.X.toarray(), atol=0.05)


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_is_cached_rebuilt_when_broken_and_deterministic(demo_data, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in demo_data.root.rglob("*") if p.is_file()}
    again = make_demo(demo_data.root.parent)  # reused, not rebuilt
    assert again == demo_data
    assert {p: p.stat().st_mtime_ns for p in demo_data.root.rglob("*") if p.is_file()} == before
    # a cache entry whose build never finished (no manifest) is replaced by a full build ...
    (tmp_path / DEMO_NAME / "xenium").mkdir(parents=True)
    (tmp_path / DEMO_NAME / "xenium" / "experiment.xenium").write_text("{}")
    fresh = make_demo(tmp_path)
    assert fresh.manifest["name"] == DEMO_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEMO_NAME]  # no temporary folders left
    # ... which, built independently, is byte-for-byte the same demo
    assert _digest(fresh.root) == _digest(demo_data.root)


def test_interrupted_build_leaves_nothing_to_reuse(tmp_path):
    gen = iter_make_demo(tmp_path)
    stages = [next(gen) for _ in range(3)]  # expression, layout, segmentation started
    assert stages[0][0].startswith("demo")
    gen.close()  # interrupted (GeneratorExit inside the build)
    assert list(tmp_path.iterdir()) == []  # no half-built demo, no temporary folder left


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root().name == "napari-cellama"
    assert DEMO_NAME == "demo-v1"
