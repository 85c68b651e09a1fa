"""Small real inputs and one cached transfer run for the annotation / export tests.

* :func:`make_xenium_subset` writes a complete Xenium output folder (XOA 2.x layout, read
  by ``spatialdata_io.xenium``) holding a compact patch of ~150 cells of another one: every
  file is the source's, restricted to those cells (masks and polygon label ids renumbered
  the way XOA numbers them), so the reader sees a whole run.
* The in-process run (:func:`transfer_run`) uses the project's demo (conftest's
  ``demo_data``, :func:`napari_cellama.datasets.make_demo` in a temporary cache: real
  held-out PBMC profiles placed in a synthetic lymph-node section, with the planted
  truth): 150 cells of its Xenium run and at most 25 reference cells per type, so the real
  engine (offline MiniLM) embeds ~330 sentences once per test session.
* The CLI test uses the real Xenium bone-marrow crop (150 cells) and a stratified subset
  of ``pbmc68k_reduced`` (at most 15 cells per label, :func:`crop_inputs`).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

CROP = Path(__file__).resolve().parents[2] / "shared" / "data" / "xenium_bone_marrow_crop"
LABEL_KEY = "bulk_labels"  # pbmc68k_reduced (CLI test on the crop)
DEMO_LABEL_KEY = "cell_type"  # the demo reference
N_QUERY = 150
PER_LABEL = 25

_CACHE: dict = {}


# --------------------------------------------------------------------------- Xenium subset
def _subset_h5(src: Path, dst: Path, keep: np.ndarray) -> None:
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for k, v in f.attrs.items():
            g.attrs[k] = v
        m = f["matrix"]
        n_feat, n_cells = (int(x) for x in m["shape"][...])
        csc = sp.csc_matrix((m["data"][...], m["indices"][...], m["indptr"][...]), shape=(n_feat, n_cells))
        sub = csc[:, keep].tocsc()
        sub.sort_indices()
        gm = g.create_group("matrix")
        for k, v in m.attrs.items():
            gm.attrs[k] = v
        gm.create_dataset("barcodes", data=m["barcodes"][...][keep])
        gm.create_dataset("data", data=sub.data.astype(m["data"].dtype))
        gm.create_dataset("indices", data=sub.indices.astype(m["indices"].dtype))
        gm.create_dataset("indptr", data=sub.indptr.astype(m["indptr"].dtype))
        gm.create_dataset("shape", data=np.array([n_feat, len(keep)], dtype=m["shape"].dtype))
        f.copy(m["features"], gm, "features")


def _copy_array(src_arr, group, name: str, data) -> None:
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype,
                             chunks=tuple(min(c, max(s, 1)) for c, s in zip(src_arr.chunks, data.shape)),
                             compressors=src_arr.compressors)
    arr[...] = data
    arr.attrs.update(dict(src_arr.attrs))


def _subset_cells_zarr(src: Path, dst: Path, keep: np.ndarray) -> dict[int, np.ndarray]:
    """Subset cells.zarr.zip; return, per mask index, the old->new raster label lookup."""
    zin = zarr.open_group(zarr.storage.ZipStore(src, mode="r"), mode="r")
    folder = dst.with_name(dst.name + ".dir")  # written as a folder, then zipped (no duplicate members)
    zout = zarr.open_group(zarr.storage.LocalStore(folder), mode="w", zarr_format=zin.metadata.zarr_format)
    attrs = dict(zin.attrs)
    attrs["number_cells"] = int(len(keep))
    zout.attrs.update(attrs)
    n_old = zin["cell_id"].shape[0]
    new_row = np.full(n_old, -1, dtype=np.int64)
    new_row[keep] = np.arange(len(keep))
    _copy_array(zin["cell_id"], zout, "cell_id", zin["cell_id"][...][keep])
    _copy_array(zin["cell_summary"], zout, "cell_summary", zin["cell_summary"][...][keep])
    relabel = {}
    ps_out = zout.create_group("polygon_sets")
    ps_out.attrs.update(dict(zin["polygon_sets"].attrs))
    for mask in ("0", "1"):
        ps = zin[f"polygon_sets/{mask}"]
        cell_index = ps["cell_index"][...]
        kept_poly = np.flatnonzero(new_row[cell_index] >= 0)
        lut = np.zeros(len(cell_index) + 1, dtype=np.uint32)  # old label p+1 -> new label
        lut[kept_poly + 1] = np.arange(1, len(kept_poly) + 1, dtype=np.uint32)
        relabel[int(mask)] = lut
        g = ps_out.create_group(mask)
        g.attrs.update(dict(ps.attrs))
        _copy_array(ps["cell_index"], g, "cell_index", new_row[cell_index[kept_poly]].astype(cell_index.dtype))
        for name in ("method", "num_vertices", "vertices"):
            _copy_array(ps[name], g, name, ps[name][...][kept_poly])
    masks_out = zout.create_group("masks")
    masks_out.attrs.update(dict(zin["masks"].attrs))
    for mask in ("0", "1"):
        raster = zin[f"masks/{mask}"][...]
        _copy_array(zin[f"masks/{mask}"], masks_out, mask, relabel[int(mask)][raster])
    _copy_array(zin["masks/homogeneous_transform"], masks_out, "homogeneous_transform",
                zin["masks/homogeneous_transform"][...])
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
    shutil.rmtree(folder)
    return relabel


def make_xenium_subset(dst: Path, src: Path = CROP, n_cells: int = N_QUERY) -> Path:
    """Write a Xenium folder with the ``n_cells`` cells nearest to the centre of ``src``."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cells = pd.read_parquet(src / "cells.parquet")
    xy = cells[["x_centroid", "y_centroid"]].to_numpy()
    centre = (xy.min(axis=0) + xy.max(axis=0)) / 2
    keep = np.sort(np.argsort(((xy - centre) ** 2).sum(axis=1), kind="stable")[:n_cells])
    ids = cells["cell_id"].to_numpy()[keep]

    experiment = json.loads((src / "experiment.xenium").read_text())
    experiment["num_cells"] = int(n_cells)
    (dst / "experiment.xenium").write_text(json.dumps(experiment, indent=4))
    _subset_h5(src / "cell_feature_matrix.h5", dst / "cell_feature_matrix.h5", keep)
    cells.iloc[keep].to_parquet(dst / "cells.parquet", index=False)
    relabel = _subset_cells_zarr(src / "cells.zarr.zip", dst / "cells.zarr.zip", keep)
    for name, mask in (("cell_boundaries.parquet", 1), ("nucleus_boundaries.parquet", 0)):
        b = pd.read_parquet(src / name)
        b = b[b["cell_id"].isin(ids)].copy()
        b["label_id"] = relabel[mask][b["label_id"].to_numpy()].astype(b["label_id"].dtype)
        b.to_parquet(dst / name, index=False)
    tx = pd.read_parquet(src / "transcripts.parquet")
    tx[tx["cell_id"].isin(ids)].to_parquet(dst / "transcripts.parquet", index=False)
    (dst / "morphology_focus").mkdir()
    for f in (src / "morphology_focus").iterdir():
        shutil.copyfile(f, dst / "morphology_focus" / f.name)
    clusters = src / "analysis" / "clustering" / "gene_expression_graphclust" / "clusters.csv"
    if clusters.exists():
        out = dst / clusters.relative_to(src)
        out.parent.mkdir(parents=True)
        c = pd.read_csv(clusters)
        c[c["Barcode"].isin(ids)].to_csv(out, index=False)
    return dst


# --------------------------------------------------------------------------- references
def _stratified(adata, label_key: str, per_label: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = []
    for _, rows in adata.obs.groupby(label_key, observed=True).indices.items():
        idx.extend(rng.permutation(rows)[:per_label].tolist())
    return adata[np.sort(idx)].copy()


def make_small_reference(path: Path, source: Path | None = None, label_key: str = LABEL_KEY,
                         per_label: int = PER_LABEL, seed: int = 0) -> Path:
    """At most ``per_label`` cells per label of ``source`` (default: pbmc68k_reduced)."""
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(source) if source is not None else sc.datasets.pbmc68k_reduced()
    _stratified(adata, label_key, per_label, seed).write_h5ad(path)
    return Path(path)


# --------------------------------------------------------------------------- cached inputs and run
def demo_inputs(tmp_root: Path, demo) -> dict:
    """150 cells of the demo run ``demo`` (a ``DemoData``), its reference subset and truth."""
    if "demo" not in _CACHE:
        root = Path(tmp_root)
        xenium = make_xenium_subset(root / "demo_xenium", src=demo.xenium_dir)
        truth = pd.read_csv(demo.truth_csv, index_col=0)
        _CACHE["demo"] = {
            "xenium": xenium,
            "reference": make_small_reference(root / "demo_reference.h5ad", demo.reference_h5ad, DEMO_LABEL_KEY),
            "truth": truth,
        }
    return _CACHE["demo"]


def crop_inputs(tmp_root: Path, crop_dir: Path = CROP) -> dict:
    """150 cells of the real bone-marrow crop and a pbmc68k_reduced reference subset."""
    if "crop" not in _CACHE:
        root = Path(tmp_root)
        _CACHE["crop"] = {
            "xenium": make_xenium_subset(root / "crop_xenium", src=crop_dir),
            "reference": make_small_reference(root / "pbmc_reference.h5ad", per_label=15),
        }
    return _CACHE["crop"]


def transfer_run(tmp_root: Path, demo):
    """``(TransferResult, query AnnData, inputs)`` of the real engine on the demo subset, once."""
    if "run" not in _CACHE:
        from napari_cellama.core import run_transfer
        from napari_cellama.io import read_query, read_reference

        paths = demo_inputs(tmp_root, demo)
        query = read_query(paths["xenium"])
        reference = read_reference(paths["reference"])
        result = run_transfer(query, reference, DEMO_LABEL_KEY, k=5)
        _CACHE["run"] = (result, query, paths)
    return _CACHE["run"]


# --------------------------------------------------------------------------- pytest fixtures
try:
    import pytest
except ImportError:  # pragma: no cover - imported by pytest only
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def cellama_tmp(tmp_path_factory):
        return tmp_path_factory.mktemp("cellama_inputs")

    @pytest.fixture(scope="session")
    def transfer(cellama_tmp, demo_data):
        """``(TransferResult, query AnnData, {'xenium', 'reference', 'truth'})`` on the demo subset
        (``demo_data``: conftest's demo, built in a temporary cache)."""
        return transfer_run(cellama_tmp, demo_data)

    @pytest.fixture(scope="session")
    def crop(cellama_tmp, crop_dir):
        """``{'xenium': Path, 'reference': Path}``: the real crop subset and a pbmc reference."""
        return crop_inputs(cellama_tmp, crop_dir)
