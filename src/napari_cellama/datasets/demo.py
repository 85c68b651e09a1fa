"""Build the demo once into the cache: :func:`make_demo` / :func:`iter_make_demo` (see the
package docstring of :mod:`napari_cellama.datasets` for what is real and what is synthetic)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core._progress import run
from ..paths import DEMO_NAME, demo_dir
from ._design import (
    CONTROL_FEATURES,
    EXPANSION,
    HMULTI_GENES,
    LARGE_NUCLEUS_TYPES,
    MARGIN,
    PIXEL_SIZE,
    SEED,
    SEGMENTATION_METHOD,
    TISSUE_SIZE,
)
from ._expression import _choose_panel, _stratified_split, counts_from_lognorm
from ._files import (
    _readme,
    _write_boundaries,
    _write_cells_zarr,
    _write_clusters,
    _write_h5,
    _write_mex,
    _write_ome_pyramid,
    _write_transcripts,
)
from ._tissue import (
    _assign_types,
    _cell_ids,
    _ellipses,
    _gene_ids,
    _layout,
    _make_dapi,
    _make_transcripts,
    _rasterise,
)


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
    root = demo_dir(cache_dir)
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


