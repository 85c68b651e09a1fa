"""Demo data: a small Xenium run built from real PBMC profiles, and its matched reference.

:func:`make_demo` writes, offline and deterministically, into a cache folder::

    <cache root>/demo-v1/
        xenium/                 a Xenium Onboard Analysis 2.x output folder (readable by
                                ``spatialdata_io.xenium(path)`` with default arguments)
        reference.h5ad          labelled scRNA reference, label column ``cell_type``, counts in X
        truth.csv               cell_id,cell_type,niche of every spatial cell (the planted truth)
        README.md               what is real and what is synthetic
        manifest.json           written last; its presence marks a complete build

The cache root is ``$NAPARI_CELLAMA_CACHE`` if set, else the platformdirs user cache
folder of ``napari-cellama``. A build happens in a temporary sibling folder that is
renamed into place at the end, so an interrupted build is never reused.

How the data are made
---------------------
*Expression (real).* scanpy's ``pbmc68k_reduced`` (700 PBMCs, 765 genes, labels
``bulk_labels``). Its ``.raw.X`` is log-normalised; counts are recovered per cell with
``expm1``, rescaled so the smallest non-zero value is 1 and rounded. The cells are split
per label, half and half (stratified, fixed seed): one half is the **reference**, the other
half is **held out** and only the held-out profiles become spatial cells, so a transfer
that is scored against ``truth.csv`` never sees the query cells in its reference.

*Panel.* The spatial run measures 300 genes: the 47 pbmc68k genes that are in the 10x
Xenium hMulti v1 panel, plus the top 15 marker genes of every reference type
(``scanpy.tl.rank_genes_groups``, Wilcoxon, on the reference only), plus the most variable
remaining genes (pbmc68k ``dispersions_norm``) up to 300. Mitochondrial and ribosomal
genes are left out, as on real Xenium panels. The reference keeps all 765 genes.

*Tissue (synthetic).* A lymph-node-like section of 400 x 300 um with three planted
domains, written as ``niche`` in ``truth.csv``:

============  ==============================================================
follicle      two round B-cell follicles: B cells with monocytes and dendritic cells
paracortex    the T-cell zone: T-cell subsets, NK cells, monocytes, a few others
medulla       a myeloid band: dendritic cells, monocytes, CD34+ cells, NK cells
============  ==============================================================

so ``CD14+ Monocyte`` lives in all three neighbourhoods, ``Dendritic`` in follicle and
medulla, ``CD56+ NK`` in paracortex and medulla. Within a domain, types are mixed at
random. Each spatial cell re-samples a held-out profile of its type (chosen at random,
independently of the domain, so expression alone cannot tell the domains apart) with
binomial thinning of its counts (detection efficiency drawn per cell in [0.3, 0.6]), so
every spatial cell is a distinct cell with realistic Xenium-like counts.

*Xenium files (synthetic, XOA 2.x layout copied from a real run).* Nuclei are ellipses
on a jittered hexagonal lattice (9.5 um spacing); a cell is its nucleus expanded by
3 um, limited by the Voronoi partition (as XOA's nucleus expansion). Masks in
``cells.zarr.zip`` are the polygons rasterised on the 0.2125 um image grid (a pixel
belongs to a polygon when its centre is inside; pixel ``i`` covers ``[i, i+1) * 0.2125``
um). Each count becomes a transcript at a random position inside its cell's mask; 6 %
extra low-quality transcripts (qv < 20, not counted), 3 % ambient transcripts anywhere in
the tissue and a few negative-control codewords/probes are added. The feature matrix is
then *derived from the transcripts* the way XOA does it (qv >= 20, assigned by the cell
mask), so transcripts, matrix and cells.parquet agree exactly. The DAPI
``morphology_focus`` image draws each nucleus with texture, blur and noise, written as a
tiled multiscale OME-TIFF. ``analysis/clustering/gene_expression_graphclust/clusters.csv``
holds a Leiden clustering of the matrix (as XOA's graph clusters).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .core._progress import run

DEMO_NAME = "demo-v1"
"""Name of the demo folder inside the cache root (bump it when the demo changes)."""

CACHE_ENV = "NAPARI_CELLAMA_CACHE"
"""Environment variable that overrides the cache root."""

PIXEL_SIZE = 0.2125
"""Image pixel size in microns (the Xenium instrument's)."""

SEED = 20260121
N_PANEL = 300
N_MARKERS_PER_TYPE = 15
TISSUE_SIZE = (400.0, 300.0)  # x, y in um
MARGIN = 20.0  # um of empty slide around the tissue
SPACING = 9.5  # um between neighbouring nuclei
EXPANSION = 3.0  # um of nucleus expansion that makes the cell boundary
HMULTI_PANEL_CSV = Path("/work/shared/data/panels/Xenium_hMulti_v1_metadata.csv")

# The 47 pbmc68k genes that are in the hMulti v1 panel (fixed here so the demo does not
# depend on the panel file being present; the file, when present, only supplies Ensembl ids).
HMULTI_GENES = [
    "AIF1",
    "BANK1",
    "C1orf162",
    "CCL5",
    "CCR7",
    "CD247",
    "CD27",
    "CD28",
    "CD2",
    "CD3D",
    "CD3E",
    "CD4",
    "CD79A",
    "CD8A",
    "CLEC10A",
    "CXCR4",
    "DUSP2",
    "EGFL7",
    "FCER1A",
    "FCGR3A",
    "FCN1",
    "FGFBP2",
    "FKBP11",
    "GATA2",
    "GNLY",
    "GZMA",
    "GZMB",
    "GZMK",
    "HES4",
    "IL7R",
    "IRF8",
    "KLRB1",
    "KLRC1",
    "LAG3",
    "LY86",
    "MNDA",
    "MS4A1",
    "MZB1",
    "NKG7",
    "PCNA",
    "PLD4",
    "PRF1",
    "PTPRC",
    "SPI1",
    "SPIB",
    "TNFRSF13B",
    "TNFRSF17",
]

NICHES = ("follicle", "paracortex", "medulla")
COMPOSITION = {
    "follicle": {"CD19+ B": 0.70, "CD14+ Monocyte": 0.15, "Dendritic": 0.15},
    "paracortex": {
        "CD4+/CD25 T Reg": 0.17,
        "CD8+ Cytotoxic T": 0.13,
        "CD8+/CD45RA+ Naive Cytotoxic": 0.11,
        "CD4+/CD45RO+ Memory": 0.09,
        "CD4+/CD45RA+/CD25- Naive T": 0.06,
        "CD56+ NK": 0.16,
        "CD14+ Monocyte": 0.16,
        "CD19+ B": 0.04,
        "Dendritic": 0.04,
        "CD34+": 0.04,
    },
    "medulla": {
        "Dendritic": 0.45,
        "CD14+ Monocyte": 0.25,
        "CD34+": 0.12,
        "CD56+ NK": 0.12,
        "CD8+ Cytotoxic T": 0.06,
    },
}
"""Planted cell-type composition of each domain."""

LARGE_NUCLEUS_TYPES = ("CD14+ Monocyte", "Dendritic", "CD34+")

CONTROL_FEATURES = (
    [
        (f"NegControlProbe_{i:05d}", "Negative Control Probe")
        for i in (2, 4, 9, 14, 19, 22, 23, 24, 28, 33)
    ]
    + [(f"NegControlCodeword_{i:04d}", "Negative Control Codeword") for i in range(500, 510)]
    + [(f"UnassignedCodeword_{i:04d}", "Unassigned Codeword") for i in (6, 37, 41, 51)]
)

SEGMENTATION_METHOD = "Segmented by nucleus expansion of 3.0µm"


@dataclass(frozen=True)
class DemoData:
    """Paths of a built demo (see the module docstring)."""

    root: Path
    xenium_dir: Path
    reference_h5ad: Path
    truth_csv: Path

    @classmethod
    def at(cls, root: str | Path) -> DemoData:
        root = Path(root)
        return cls(root, root / "xenium", root / "reference.h5ad", root / "truth.csv")

    @property
    def manifest(self) -> dict:
        """Build summary (counts, panel, seed) written with the demo."""
        return json.loads((self.root / "manifest.json").read_text())


def cache_root() -> Path:
    """``$NAPARI_CELLAMA_CACHE`` or the user cache folder of napari-cellama."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-cellama"))


def _is_complete(demo: DemoData) -> bool:
    try:
        manifest = demo.manifest
    except (OSError, ValueError):
        return False
    return manifest.get("name") == DEMO_NAME and all(
        p.exists()
        for p in (demo.xenium_dir / "experiment.xenium", demo.reference_h5ad, demo.truth_csv)
    )


def make_demo(cache_dir: str | Path | None = None, force: bool = False) -> DemoData:
    """Build the demo into ``cache_dir / "demo-v1"`` (default: :func:`cache_root`) once.

    Later calls return the existing build at once; ``force=True`` rebuilds it.
    """
    return run(iter_make_demo(cache_dir, force))


def iter_make_demo(cache_dir: str | Path | None = None, force: bool = False) -> Iterator:
    """Generator version of :func:`make_demo`, yielding ``(stage, done, total)``."""
    root = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / DEMO_NAME
    demo = DemoData.at(root)
    if _is_complete(demo) and not force:
        return demo
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{DEMO_NAME}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield from _iter_build(tmp)
        if root.exists():
            if _is_complete(demo) and not force:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return demo
            trash = root.parent / f".{DEMO_NAME}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_complete(demo):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return demo


# --------------------------------------------------------------------------- expression


def counts_from_lognorm(x) -> sp.csr_matrix:
    """Integer counts from log1p-normalised values (expm1, smallest non-zero = 1, round)."""
    x = sp.csr_matrix(x, dtype=np.float64)
    e = x.copy()
    e.data = np.expm1(e.data)
    mins = np.array(
        [e.data[a:b].min() if b > a else 1.0 for a, b in zip(e.indptr[:-1], e.indptr[1:])]
    )
    e.data /= np.repeat(mins, np.diff(e.indptr))
    e.data = np.round(e.data)
    e.eliminate_zeros()
    return e.astype(np.int32)


def _stratified_split(labels: pd.Series, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ref, held = [], []
    for name in sorted(labels.unique()):
        idx = np.flatnonzero((labels == name).to_numpy())
        idx = rng.permutation(idx)
        n_ref = (len(idx) + 1) // 2
        ref.append(idx[:n_ref])
        held.append(idx[n_ref:])
    return np.sort(np.concatenate(ref)), np.sort(np.concatenate(held))


def _choose_panel(
    lognorm_ref, labels_ref: pd.Series, genes: pd.Index, dispersion: np.ndarray
) -> list[str]:
    import anndata as ad
    import scanpy as sc

    allowed = ~genes.str.upper().str.match(r"^(MT-|RPL|RPS)")
    chosen = [g for g in genes if g in set(HMULTI_GENES)]
    obs = pd.DataFrame(
        {"t": labels_ref.astype("category").values}, index=[str(i) for i in range(len(labels_ref))]
    )
    tmp = ad.AnnData(X=sp.csr_matrix(lognorm_ref), obs=obs)
    tmp.var_names = genes
    sc.tl.rank_genes_groups(tmp, "t", method="wilcoxon", n_genes=len(genes), use_raw=False)
    names = pd.DataFrame(tmp.uns["rank_genes_groups"]["names"])
    for group in sorted(names.columns):
        picked = 0
        for g in names[group]:
            if picked == N_MARKERS_PER_TYPE:
                break
            if allowed[genes.get_loc(g)]:
                if g not in chosen:
                    chosen.append(g)
                picked += 1
    for i in np.argsort(-dispersion, kind="stable"):
        if len(chosen) >= N_PANEL:
            break
        if allowed[i] and genes[i] not in chosen:
            chosen.append(genes[i])
    return sorted(chosen[:N_PANEL])


# --------------------------------------------------------------------------- tissue layout


def _layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus centres (um, slide coordinates) and the planted domain of each."""
    w, h = TISSUE_SIZE
    dy = SPACING * np.sqrt(3) / 2
    pts = []
    for j in range(int(h / dy) + 2):
        for i in range(int(w / SPACING) + 2):
            pts.append((i * SPACING + (j % 2) * SPACING / 2, j * dy))
    p = np.array(pts) + rng.uniform(-1.5, 1.5, size=(len(pts), 2))
    cx, cy = w / 2, h / 2
    inside = ((p[:, 0] - cx) / (w / 2 - 3)) ** 4 + ((p[:, 1] - cy) / (h / 2 - 3)) ** 4 <= 1
    p = p[inside]
    niche = np.full(len(p), "paracortex", dtype=object)
    for fx, fy, r in ((130.0, 110.0, 62.0), (255.0, 215.0, 55.0)):
        niche[(p[:, 0] - fx) ** 2 + (p[:, 1] - fy) ** 2 <= r**2] = "follicle"
    niche[p[:, 0] > 330.0] = "medulla"
    return p + MARGIN, niche


def _assign_types(niche: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(len(niche), dtype=object)
    for name, comp in COMPOSITION.items():
        idx = np.flatnonzero(niche == name)
        types = list(comp)
        prob = np.array([comp[t] for t in types])
        out[idx] = np.array(types, dtype=object)[
            rng.choice(len(types), size=len(idx), p=prob / prob.sum())
        ]
    return out


# --------------------------------------------------------------------------- geometry


def _ellipses(centres, a, b, theta, n=24) -> list:
    import shapely

    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x = centres[:, 0:1] + a[:, None] * np.cos(t) * ct - b[:, None] * np.sin(t) * st
    y = centres[:, 1:2] + a[:, None] * np.cos(t) * st + b[:, None] * np.sin(t) * ct
    return shapely.polygons(np.stack([x, y], axis=-1))


def _rasterise(polys, shape) -> np.ndarray:
    """Label image (uint32, label = row + 1) of polygons; pixel centre inside; first wins."""
    from skimage.draw import polygon as draw_polygon

    out = np.zeros(shape, dtype=np.uint32)
    for i, poly in enumerate(polys):
        xy = np.asarray(poly.exterior.coords)
        rr, cc = draw_polygon(xy[:, 1] / PIXEL_SIZE - 0.5, xy[:, 0] / PIXEL_SIZE - 0.5, shape)
        free = out[rr, cc] == 0
        out[rr[free], cc[free]] = i + 1
    return out


def _ring(poly) -> np.ndarray:
    """Closed exterior ring (first vertex repeated), float32, clockwise as XOA writes it."""
    import shapely

    poly = shapely.orient_polygons(poly, exterior_cw=True)
    return np.asarray(poly.exterior.coords, dtype=np.float32)


# --------------------------------------------------------------------------- build


def _iter_build(out: Path) -> Iterator:
    import anndata as ad
    import scanpy as sc
    import shapely

    total = 8
    rng = np.random.default_rng(SEED)
    yield ("demo: expression", 0, total)
    pbmc = sc.datasets.pbmc68k_reduced()
    genes = pd.Index(pbmc.raw.var_names.astype(str))
    counts = counts_from_lognorm(pbmc.raw.X)
    labels = pbmc.obs["bulk_labels"].astype(str)
    ref_idx, held_idx = _stratified_split(labels, rng)
    panel = _choose_panel(
        pbmc.raw.X[ref_idx], labels.iloc[ref_idx], genes, pbmc.var["dispersions_norm"].to_numpy()
    )
    panel_cols = genes.get_indexer(panel)

    yield ("demo: tissue layout", 1, total)
    centres, niche = _layout(rng)
    cell_type = _assign_types(niche, rng)
    n = len(centres)
    held_labels = labels.iloc[held_idx].to_numpy()
    source = np.empty(n, dtype=np.int64)
    for t in np.unique(cell_type):
        pool = held_idx[held_labels == t]
        where = np.flatnonzero(cell_type == t)
        source[where] = pool[rng.integers(0, len(pool), size=len(where))]
    efficiency = rng.uniform(0.3, 0.6, size=n)
    prof = counts[source][:, panel_cols].toarray()
    expr = rng.binomial(prof, efficiency[:, None]).astype(np.int64)  # cells x panel genes

    yield ("demo: segmentation", 2, total)
    big = np.isin(cell_type, LARGE_NUCLEUS_TYPES)
    a = rng.uniform(2.3, 2.9, size=n) * np.where(big, 1.3, 1.0)
    b = a * rng.uniform(0.72, 0.95, size=n)
    theta = rng.uniform(0, np.pi, size=n)
    ncentre = centres + rng.uniform(-0.3, 0.3, size=(n, 2))
    width = int(np.ceil((TISSUE_SIZE[0] + 2 * MARGIN) / PIXEL_SIZE))
    height = int(np.ceil((TISSUE_SIZE[1] + 2 * MARGIN) / PIXEL_SIZE))
    shape = (height, width)
    box = shapely.box(0, 0, width * PIXEL_SIZE, height * PIXEL_SIZE)
    vor = np.asarray(
        shapely.voronoi_polygons(shapely.multipoints(centres), extend_to=box, ordered=True).geoms
    )
    nuclei_raw = _ellipses(ncentre, a, b, theta)
    cells_poly = shapely.intersection(vor, shapely.buffer(nuclei_raw, EXPANSION, quad_segs=4))
    cells_poly = shapely.simplify(cells_poly, 0.15)
    nuclei_poly = shapely.simplify(shapely.intersection(nuclei_raw, vor), 0.05)
    cell_mask = _rasterise(cells_poly, shape)
    nucleus_mask = _rasterise(nuclei_poly, shape)
    nucleus_mask[cell_mask != nucleus_mask] = 0  # a nucleus stays inside its own cell

    yield ("demo: transcripts", 3, total)
    tx = _make_transcripts(expr, panel, cell_mask, nucleus_mask, rng)
    cell_ids = _cell_ids(n, rng)
    feature_names = list(panel) + [f for f, _ in CONTROL_FEATURES]
    feature_types = ["Gene Expression"] * len(panel) + [t for _, t in CONTROL_FEATURES]
    assigned = tx["cell_index"] >= 0
    counted = assigned & (tx["qv"] >= 20)
    fcode = pd.Index(feature_names).get_indexer(tx["feature_name"])
    matrix = sp.csr_matrix(
        (np.ones(int(counted.sum()), dtype=np.int32), (tx["cell_index"][counted], fcode[counted])),
        shape=(n, len(feature_names)),
    )
    matrix.sum_duplicates()

    yield ("demo: morphology image", 4, total)
    image = _make_dapi(cell_mask, nucleus_mask, ncentre, a, b, theta, rng)

    yield ("demo: writing Xenium files", 5, total)
    xdir = out / "xenium"
    xdir.mkdir(parents=True)
    cell_area = shapely.area(cells_poly)
    nuc_area = shapely.area(nuclei_poly)
    cent = shapely.get_coordinates(shapely.centroid(cells_poly))
    ncent = shapely.get_coordinates(shapely.centroid(nuclei_poly))
    z_level = np.round(rng.normal(10.0, 1.5, size=n) / 3.0)
    per_type = {
        t: np.asarray(
            matrix[:, [i for i, ft in enumerate(feature_types) if ft == t]].sum(axis=1)
        ).ravel()
        for t in sorted(set(feature_types))
    }
    cells = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "x_centroid": cent[:, 0],
            "y_centroid": cent[:, 1],
            "transcript_counts": per_type["Gene Expression"].astype(np.int64),
            "control_probe_counts": per_type["Negative Control Probe"].astype(np.int64),
            "control_codeword_counts": per_type["Negative Control Codeword"].astype(np.int64),
            "unassigned_codeword_counts": per_type["Unassigned Codeword"].astype(np.int64),
            "deprecated_codeword_counts": np.zeros(n, dtype=np.int64),
            "total_counts": np.asarray(matrix.sum(axis=1)).ravel().astype(np.int64),
            "cell_area": cell_area,
            "nucleus_area": nuc_area,
            "nucleus_count": np.ones(n, dtype=np.int64),
            "segmentation_method": SEGMENTATION_METHOD,
        }
    )
    cells.to_parquet(xdir / "cells.parquet", index=False, compression="zstd")
    _write_boundaries(xdir / "cell_boundaries.parquet", cells_poly, cell_ids)
    _write_boundaries(xdir / "nucleus_boundaries.parquet", nuclei_poly, cell_ids)
    _write_transcripts(xdir / "transcripts.parquet", tx, cell_ids)
    gene_ids = _gene_ids(panel)
    feature_ids = gene_ids + [f for f, _ in CONTROL_FEATURES]
    _write_h5(
        xdir / "cell_feature_matrix.h5", matrix, cell_ids, feature_ids, feature_names, feature_types
    )
    _write_mex(
        xdir / "cell_feature_matrix", matrix, cell_ids, feature_ids, feature_names, feature_types
    )
    summary = np.column_stack([cent, cell_area, ncent, nuc_area, z_level, np.ones(n)])
    _write_cells_zarr(
        xdir / "cells.zarr.zip", cell_mask, nucleus_mask, cells_poly, nuclei_poly, cell_ids, summary
    )
    _write_ome_pyramid(xdir / "morphology_focus" / "morphology_focus_0000.ome.tif", image)
    _write_clusters(
        xdir / "analysis" / "clustering" / "gene_expression_graphclust" / "clusters.csv",
        matrix[:, : len(panel)],
        cell_ids,
    )
    experiment = {
        "major_version": 5,
        "minor_version": 0,
        "patch_version": 0,
        "run_name": "napari-cellama demo (PBMC profiles in a synthetic lymph-node section)",
        "run_start_time": "N/A",
        "region_name": "demo",
        "preservation_method": "N/A",
        "num_cells": int(n),
        "transcripts_per_cell": float(np.median(cells["transcript_counts"])),
        "num_transcripts": len(tx["qv"]),
        "total_cell_area": float(cell_area.sum()),
        "cassette_name": "N/A",
        "slide_id": "N/A",
        "panel_design_id": "N/A",
        "panel_name": f"napari-cellama demo panel ({len(panel)} genes)",
        "panel_organism": "Human",
        "panel_tissue_type": "N/A",
        "panel_num_targets_predesigned": int(sum(g in HMULTI_GENES for g in panel)),
        "panel_num_targets_custom": int(sum(g not in HMULTI_GENES for g in panel)),
        "pixel_size": PIXEL_SIZE,
        "instrument_sn": "N/A",
        "instrument_sw_version": "N/A",
        "analysis_sw_version": "xenium-2.0.0.10",
        "experiment_uuid": "",
        "cassette_uuid": "",
        "roi_uuid": "",
        "z_step_size": 3.0,
        "well_uuid": "",
        "calibration_uuid": "N/A",
        "images": {"morphology_focus_filepath": "morphology_focus/morphology_focus_0000.ome.tif"},
        "xenium_explorer_files": {"cells_zarr_filepath": "cells.zarr.zip"},
    }
    (xdir / "experiment.xenium").write_text(json.dumps(experiment, indent=4))

    yield ("demo: writing reference", 6, total)
    ref_obs = pbmc.obs.iloc[ref_idx].copy()
    ref_obs.insert(0, "cell_type", ref_obs.pop("bulk_labels"))
    ref_obs["cell_type"] = ref_obs["cell_type"].cat.remove_unused_categories()
    ref_var = pd.DataFrame({"in_demo_panel": genes.isin(panel)}, index=genes)
    reference = ad.AnnData(X=counts[ref_idx].astype(np.float32), obs=ref_obs, var=ref_var)
    reference.uns["napari_cellama_demo"] = {
        "source": "scanpy.datasets.pbmc68k_reduced; counts recovered from .raw "
        "(expm1, rescale, round)",
        "split": f"stratified by bulk_labels, seed {SEED}; reference half only",
    }
    reference.write_h5ad(out / "reference.h5ad")
    pd.DataFrame(
        {"cell_id": cell_ids, "cell_type": cell_type.astype(str), "niche": niche.astype(str)}
    ).to_csv(out / "truth.csv", index=False)

    yield ("demo: manifest", 7, total)
    (out / "README.md").write_text(_readme(n, panel, matrix, tx, cell_type, niche))
    manifest = {
        "name": DEMO_NAME,
        "seed": SEED,
        "pixel_size": PIXEL_SIZE,
        "n_cells": int(n),
        "n_reference_cells": len(ref_idx),
        "n_heldout_profiles": len(held_idx),
        "n_panel_genes": len(panel),
        "panel_genes": list(panel),
        "panel_hmulti_genes": [g for g in panel if g in HMULTI_GENES],
        "n_transcripts": len(tx["qv"]),
        "image_shape": list(shape),
        "cell_types": {
            k: int(v) for k, v in pd.Series(cell_type).value_counts().sort_index().items()
        },
        "niches": {k: int(v) for k, v in pd.Series(niche).value_counts().sort_index().items()},
        "types_in_several_niches": sorted(
            t for t in np.unique(cell_type) if len(np.unique(niche[cell_type == t])) >= 2
        ),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    yield ("demo: done", total, total)


def _cell_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """XOA cell ids: 8 letters a..p (the uint32 prefix as hex nibbles) + ``-1``, sorted."""
    prefixes = np.sort(2**24 + rng.choice(2**28 - 2**24, size=n, replace=False)).astype(np.uint32)
    return encode_cell_ids(prefixes)


def encode_cell_ids(prefixes: np.ndarray, suffix: int = 1) -> np.ndarray:
    """The Xenium string of uint32 cell-id prefixes (``0 -> a`` ... ``15 -> p`` per nibble)."""
    prefixes = np.asarray(prefixes, dtype=np.uint32)
    shifts = np.array([28, 24, 20, 16, 12, 8, 4, 0], dtype=np.uint32)
    chars = (((prefixes[:, None] >> shifts) & 0xF) + ord("a")).astype(np.uint8)
    return np.char.add(chars.view("S8").ravel().astype("U8"), f"-{suffix}")


def decode_cell_ids(cell_ids) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_cell_ids`: (uint32 prefix, suffix) arrays."""
    ids = np.asarray(cell_ids).astype(str)
    prefix = np.array([s.split("-")[0] for s in ids])
    suffix = np.array([int(s.split("-")[1]) for s in ids], dtype=np.uint32)
    nib = np.frombuffer(prefix.astype("S8").tobytes(), dtype=np.uint8).reshape(-1, 8).astype(
        np.uint32
    ) - ord("a")
    shifts = np.array([28, 24, 20, 16, 12, 8, 4, 0], dtype=np.uint32)
    return (nib << shifts).sum(axis=1).astype(np.uint32), suffix


def _gene_ids(panel) -> list[str]:
    ids = {}
    if HMULTI_PANEL_CSV.exists():
        meta = pd.read_csv(HMULTI_PANEL_CSV)
        ids = dict(zip(meta["Gene"].astype(str), meta["Ensembl_ID"].astype(str)))
    return [ids.get(g, g) for g in panel]


def _pixel_groups(mask: np.ndarray):
    """Flat pixel indices grouped by label: (order, start, stop) with start/stop per label."""
    flat = mask.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_labels = flat[order]
    n = int(mask.max())
    start = np.searchsorted(sorted_labels, np.arange(1, n + 1), side="left")
    stop = np.searchsorted(sorted_labels, np.arange(1, n + 1), side="right")
    return order, start, stop


def _make_transcripts(expr, panel, cell_mask, nucleus_mask, rng) -> dict:
    from scipy import ndimage

    h, w = cell_mask.shape
    n_cells, n_genes = expr.shape
    order, start, stop = _pixel_groups(cell_mask)
    size = stop - start
    # counted transcripts: one per count, inside the cell's mask
    cell_of = np.repeat(np.repeat(np.arange(n_cells), n_genes), expr.ravel())
    gene_of = np.repeat(np.tile(np.arange(n_genes), n_cells), expr.ravel())
    qv_good = (20.0 + 20.0 * rng.beta(6.0, 1.0, size=len(cell_of))).astype(np.float32)
    # low-quality (qv < 20) copies drawn from the same cells' genes: never counted
    n_low = int(0.06 * len(cell_of))
    pick = rng.integers(0, len(cell_of), size=n_low)
    cell_low, gene_low = cell_of[pick], gene_of[pick]
    qv_low = rng.uniform(5.0, 19.9, size=n_low).astype(np.float32)
    cells_all = np.concatenate([cell_of, cell_low])
    genes_all = np.concatenate([gene_of, gene_low])
    qv_all = np.concatenate([qv_good, qv_low])
    pix = order[start[cells_all] + (rng.random(len(cells_all)) * size[cells_all]).astype(np.int64)]
    row, col = np.divmod(pix, w)
    x = (col + rng.random(len(pix))) * PIXEL_SIZE
    y = (row + rng.random(len(pix))) * PIXEL_SIZE
    names = np.asarray(list(panel), dtype=object)[genes_all]
    # ambient transcripts anywhere over the tissue box, and negative controls
    gene_freq = expr.sum(axis=0) / max(expr.sum(), 1)
    n_amb = int(0.03 * len(cell_of))
    n_ctrl = max(int(0.004 * len(cell_of)), len(CONTROL_FEATURES))
    x0, x1 = MARGIN - 5, MARGIN + TISSUE_SIZE[0] + 5
    y0, y1 = MARGIN - 5, MARGIN + TISSUE_SIZE[1] + 5
    xa = rng.uniform(x0, x1, size=n_amb + n_ctrl)
    ya = rng.uniform(y0, y1, size=n_amb + n_ctrl)
    amb_names = np.concatenate(
        [
            np.asarray(list(panel), dtype=object)[rng.choice(n_genes, size=n_amb, p=gene_freq)],
            np.asarray([f for f, _ in CONTROL_FEATURES], dtype=object)[
                rng.integers(0, len(CONTROL_FEATURES), n_ctrl)
            ],
        ]
    )
    qv_amb = (20.0 + 20.0 * rng.beta(4.0, 1.0, size=n_amb + n_ctrl)).astype(np.float32)
    x = np.concatenate([x, xa]).astype(np.float32)
    y = np.concatenate([y, ya]).astype(np.float32)
    names = np.concatenate([names, amb_names])
    qv = np.concatenate([qv_all, qv_amb])
    r = np.clip((y.astype(np.float64) / PIXEL_SIZE).astype(np.int64), 0, h - 1)
    c = np.clip((x.astype(np.float64) / PIXEL_SIZE).astype(np.int64), 0, w - 1)
    cell_index = cell_mask[r, c].astype(np.int64) - 1
    in_nucleus = nucleus_mask[r, c] > 0
    dist = ndimage.distance_transform_edt(nucleus_mask == 0) * PIXEL_SIZE
    nucleus_distance = np.where(in_nucleus, 0.0, dist[r, c]).astype(np.float32)
    z = rng.normal(10.0, 1.5, size=len(x)).astype(np.float32)
    # XOA writes transcripts field of view by field of view: sort by 200 um tiles, then x
    fov = (y // 200).astype(np.int64) * 1000 + (x // 200).astype(np.int64)
    o = np.lexsort((x, fov))
    return {
        "x": x[o],
        "y": y[o],
        "z": z[o],
        "qv": qv[o],
        "feature_name": names[o],
        "cell_index": cell_index[o],
        "overlaps_nucleus": in_nucleus[o].astype(np.uint8),
        "nucleus_distance": nucleus_distance[o],
    }


def _make_dapi(cell_mask, nucleus_mask, centres, a, b, theta, rng) -> np.ndarray:
    from scipy import ndimage

    h, w = cell_mask.shape
    img = np.full((h, w), 95.0, dtype=np.float32)
    img[cell_mask > 0] += 60.0  # cytoplasmic autofluorescence
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32), 1.6)
    noise /= noise.std() + 1e-6
    rows, cols = np.nonzero(nucleus_mask)
    lab = nucleus_mask[rows, cols].astype(np.int64) - 1
    xs = (cols + 0.5) * PIXEL_SIZE - centres[lab, 0]
    ys = (rows + 0.5) * PIXEL_SIZE - centres[lab, 1]
    ct, st = np.cos(theta[lab]), np.sin(theta[lab])
    u = (xs * ct + ys * st) / a[lab]
    v = (-xs * st + ys * ct) / b[lab]
    r2 = np.clip(u * u + v * v, 0.0, 1.0)
    brightness = np.exp(rng.normal(np.log(2400.0), 0.25, size=len(a)))
    texture = 1.0 + 0.28 * noise[rows, cols]
    img[rows, cols] += brightness[lab] * (0.55 + 0.45 * np.sqrt(1.0 - r2)) * texture
    img = ndimage.gaussian_filter(img, 1.3)
    img += rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32) * np.sqrt(img) * 1.5
    return np.clip(np.round(img), 0, 65535).astype(np.uint16)


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
