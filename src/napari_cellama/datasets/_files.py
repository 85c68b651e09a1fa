"""Demo Xenium files: boundaries, transcripts, the feature matrix (h5 and MEX), ``cells.zarr.zip``,
the OME-TIFF pyramid, the graph clusters and the README, in the XOA 2.x layout."""

from __future__ import annotations

import gzip
import io
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..paths import DEMO_NAME
from ._design import HMULTI_GENES, PIXEL_SIZE, SEGMENTATION_METHOD
from ._tissue import _ring, decode_cell_ids

# --------------------------------------------------------------------------- writers


def _write_boundaries(path: Path, polys, cell_ids) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rings = [_ring(p) for p in polys]
    lengths = np.array([len(r) for r in rings])
    xy = np.concatenate(rings)
    table = pa.table(
        {
            "cell_id": pa.array(
                np.repeat(np.asarray(cell_ids), lengths).astype(object), pa.string()
            ),
            "vertex_x": pa.array(xy[:, 0], pa.float32()),
            "vertex_y": pa.array(xy[:, 1], pa.float32()),
            "label_id": pa.array(
                np.repeat(np.arange(1, len(rings) + 1, dtype=np.uint32), lengths), pa.uint32()
            ),
        }
    )
    pq.write_table(table, path, compression="zstd")


def _write_transcripts(path: Path, tx: dict, cell_ids) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(tx["x"])
    ids = np.where(
        tx["cell_index"] >= 0,
        np.asarray(cell_ids, dtype=object)[np.maximum(tx["cell_index"], 0)],
        "UNASSIGNED",
    )
    table = pa.table(
        {
            "transcript_id": pa.array(
                np.uint64(281474976710656) + np.arange(n, dtype=np.uint64), pa.uint64()
            ),
            "cell_id": pa.array(ids.astype(object), pa.string()),
            "overlaps_nucleus": pa.array(tx["overlaps_nucleus"], pa.uint8()),
            "feature_name": pa.array(tx["feature_name"].astype(object), pa.string()),
            "x_location": pa.array(tx["x"], pa.float32()),
            "y_location": pa.array(tx["y"], pa.float32()),
            "z_location": pa.array(tx["z"], pa.float32()),
            "qv": pa.array(tx["qv"], pa.float32()),
            "nucleus_distance": pa.array(tx["nucleus_distance"], pa.float32()),
        }
    )
    pq.write_table(table, path, compression="zstd")


def _write_h5(path: Path, matrix: sp.csr_matrix, cell_ids, feature_ids, names, types) -> None:
    import h5py

    csc = sp.csc_matrix(matrix.T)  # features x cells, compressed by cell (10x layout)
    csc.sort_indices()

    def fixed(values):
        values = [str(v).encode() for v in values]
        return np.array(values, dtype=f"S{max(len(v) for v in values)}")

    def put(group, name, data, shuffle=False):
        group.create_dataset(
            name,
            data=data,
            compression="gzip",
            compression_opts=4,
            shuffle=shuffle,
            chunks=(min(len(data), 1 << 15),) if len(data) else None,
            track_times=False,
        )

    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["library_ids"] = np.array([b"0000000_0000000"])
        f.attrs["original_gem_groups"] = np.array([1])
        f.attrs["version"] = np.int64(2)
        m = f.create_group("matrix")
        put(m, "barcodes", fixed(cell_ids))
        put(m, "data", csc.data.astype(np.int32), shuffle=True)
        put(m, "indices", csc.indices.astype(np.int64), shuffle=True)
        put(m, "indptr", csc.indptr.astype(np.int64), shuffle=True)
        put(m, "shape", np.array(csc.shape, dtype=np.int32))
        feat = m.create_group("features")
        put(feat, "_all_tag_keys", np.array([b"genome"]))
        put(feat, "feature_type", fixed(types))
        put(feat, "genome", fixed(["Unknown"] * len(names)))
        put(feat, "id", fixed(feature_ids))
        put(feat, "name", fixed(names))


def _gzip_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


def _write_mex(folder: Path, matrix, cell_ids, feature_ids, names, types) -> None:
    from scipy.io import mmwrite

    folder.mkdir()
    _gzip_bytes(folder / "barcodes.tsv.gz", ("\n".join(cell_ids) + "\n").encode())
    rows = [f"{i}\t{nm}\t{t}" for i, nm, t in zip(feature_ids, names, types)]
    _gzip_bytes(folder / "features.tsv.gz", ("\n".join(rows) + "\n").encode())
    buf = io.BytesIO()
    mmwrite(buf, sp.coo_matrix(matrix.T), field="integer")
    _gzip_bytes(folder / "matrix.mtx.gz", buf.getvalue())


def _polygon_set(group, polys, n_cells: int) -> None:
    import numcodecs

    rings = [_ring(p) for p in polys]
    nv = np.array([len(r) for r in rings], dtype=np.int32)
    verts = np.zeros((len(rings), 2 * int(nv.max())), dtype=np.float32)
    for i, r in enumerate(rings):
        verts[i, : 2 * len(r)] = r.ravel()
    comp = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    for name, data in (
        ("cell_index", np.arange(n_cells, dtype=np.uint32)),
        ("method", np.zeros(n_cells, dtype=np.uint32)),
        ("num_vertices", nv),
        ("vertices", verts),
    ):
        arr = group.create_array(
            name,
            shape=data.shape,
            chunks=data.shape,
            dtype=data.dtype,
            compressors=comp,
            fill_value=0,
        )
        arr[...] = data


def _write_cells_zarr(
    path: Path, cell_mask, nucleus_mask, cells_poly, nuclei_poly, cell_ids, summary
) -> None:
    """``cells.zarr.zip``: zarr v2 groups in an uncompressed zip, as XOA 2.x writes it."""
    import numcodecs
    import zarr

    n = len(cell_ids)
    prefix, suffix = decode_cell_ids(cell_ids)
    staging = path.parent / (path.name + ".d")
    root = zarr.open_group(zarr.storage.LocalStore(staging), mode="w", zarr_format=2)
    root.attrs.update(
        {
            "major_version": 6,
            "minor_version": 0,
            "name": "CellSegmentationDataset",
            "number_cells": n,
            "polygon_set_names": ["nucleus", "cell"],
            "polygon_set_display_names": ["Nucleus boundaries", "Cell boundaries"],
            "polygon_set_descriptions": [
                "Nucleus boundaries (ellipses drawn by the napari-cellama demo generator)",
                "Expansion of nuclei boundaries",
            ],
            "segmentation_methods": [SEGMENTATION_METHOD],
            "spatial_units": "microns",
        }
    )
    comp = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)

    def put(group, name, data, chunks=None, attrs=None):
        arr = group.create_array(
            name,
            shape=data.shape,
            chunks=chunks or data.shape,
            dtype=data.dtype,
            compressors=comp,
            fill_value=0,
        )
        arr[...] = data
        if attrs:
            arr.attrs.update(attrs)

    put(root, "cell_id", np.column_stack([prefix, suffix]).astype(np.uint32))
    put(
        root,
        "cell_summary",
        summary.astype(np.float64),
        attrs={
            "column_names": [
                "cell_centroid_x",
                "cell_centroid_y",
                "cell_area",
                "nucleus_centroid_x",
                "nucleus_centroid_y",
                "nucleus_area",
                "z_level",
                "nucleus_count",
            ],
            "column_descriptions": [
                "Cell centroid in X",
                "Cell centroid in Y",
                "Cell area",
                "Nucleus centroid in X",
                "Nucleus centroid in Y",
                "Nucleus area",
                "z_level",
                "Number of nuclei",
            ],
        },
    )
    masks = root.create_group("masks")
    chunks = (min(4096, cell_mask.shape[0]), min(4096, cell_mask.shape[1]))
    put(masks, "0", nucleus_mask, chunks)
    put(masks, "1", cell_mask, chunks)
    put(
        masks,
        "homogeneous_transform",
        np.diag([1 / PIXEL_SIZE, 1 / PIXEL_SIZE, 1.0, 1.0]).astype(np.float32),
    )
    sets = root.create_group("polygon_sets")
    _polygon_set(sets.create_group("0"), nuclei_poly, n)
    _polygon_set(sets.create_group("1"), cells_poly, n)
    # zip members in sorted order with a fixed date: the archive is byte-for-byte reproducible
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(
                file.relative_to(staging).as_posix(), date_time=(1980, 1, 1, 0, 0, 0)
            )
            zf.writestr(info, file.read_bytes())
    shutil.rmtree(staging)


def _downsample(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    pad = np.pad(img.astype(np.float32), ((0, h % 2), (0, w % 2)), mode="edge")
    return np.round(
        pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2).mean(axis=(1, 3))
    ).astype(img.dtype)


def _write_ome_pyramid(path: Path, image: np.ndarray) -> None:
    """Tiled zlib OME-TIFF with its 2x sub-resolutions in SubIFDs (XOA 2.x morphology_focus)."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    levels = [image]
    while min(levels[-1].shape) > 256:
        levels.append(_downsample(levels[-1]))
    res = (1e4 / PIXEL_SIZE, 1e4 / PIXEL_SIZE)
    common = {
        "tile": (512, 512),
        "compression": "zlib",
        "predictor": True,
        "photometric": "minisblack",
        "resolution": res,
        "resolutionunit": "CENTIMETER",
    }
    meta = {
        "axes": "YX",
        "Name": "morphology_focus",
        "UUID": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "napari-cellama/" + DEMO_NAME)),
        "PhysicalSizeX": PIXEL_SIZE,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": PIXEL_SIZE,
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": ["DAPI"]},
    }
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata=meta, **common)
        for lvl in levels[1:]:
            tif.write(lvl, subfiletype=1, metadata=None, **common)


def _write_clusters(path: Path, gene_matrix, cell_ids) -> None:
    """Graph-based clusters of the cells (log-normalised counts, PCA, kNN graph, Leiden)."""
    import igraph as ig
    import leidenalg
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    x = sp.csr_matrix(gene_matrix, dtype=np.float64)
    totals = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
    x = sp.diags(1e4 / totals) @ x
    x.data = np.log1p(x.data)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # a small SVD: threads only add contention
        pcs = PCA(n_components=15, svd_solver="full").fit_transform(x.toarray())
    nn = NearestNeighbors(n_neighbors=15).fit(pcs)
    _, idx = nn.kneighbors(pcs)
    edges = {(min(i, j), max(i, j)) for i, row in enumerate(idx) for j in row[1:]}
    graph = ig.Graph(n=len(cell_ids), edges=sorted(edges))
    part = leidenalg.find_partition(
        graph, leidenalg.RBConfigurationVertexPartition, resolution_parameter=0.8, seed=0
    )
    membership = np.asarray(part.membership)
    # XOA numbers clusters from 1 by decreasing size
    sizes = np.bincount(membership)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Barcode": cell_ids, "Cluster": rank[membership] + 1}).to_csv(path, index=False)


def _readme(n, panel, matrix, tx, cell_type, niche) -> str:
    comp = pd.crosstab(pd.Series(cell_type, name="cell_type"), pd.Series(niche, name="niche"))
    return (
        f"# napari-cellama demo ({DEMO_NAME})\n\n"
        "Generated by `napari_cellama.datasets.make_demo()`; see that module's docstring "
        "for how.\n\n"
        f"* spatial cells: {n} (held-out pbmc68k_reduced profiles, binomially thinned)\n"
        f"* panel: {len(panel)} genes ({sum(g in HMULTI_GENES for g in panel)} from the "
        "Xenium hMulti v1 panel)\n"
        f"* transcripts: {len(tx['qv'])}; matrix counts (qv >= 20, in cells): {int(matrix.sum())}\n"
        f"* pixel size: {PIXEL_SIZE} um; coordinates in microns\n"
        "* `reference.h5ad`: the other half of pbmc68k_reduced, all genes, raw counts in X, "
        "label column `cell_type`\n"
        "* `truth.csv`: `cell_id,cell_type,niche` (planted truth)\n\n"
        "Planted composition (cells per type and domain):\n\n```\n" + comp.to_string() + "\n```\n"
    )

