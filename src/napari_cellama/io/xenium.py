"""Xenium output folders through ``spatialdata_io.xenium``.

Before handing a folder to spatialdata-io, the files it needs are checked so that
a broken run gives one message naming the missing or unreadable file instead of
a traceback from deep inside the reader.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..paths import EXPERIMENT_FILE, xenium_root
from ..validators import CellamaInputError

MATRIX_FILE = "cell_feature_matrix.h5"
CELLS_PARQUET = "cells.parquet"
CELLS_ZARR = "cells.zarr.zip"
CELL_BOUNDARIES = "cell_boundaries.parquet"
NUCLEUS_BOUNDARIES = "nucleus_boundaries.parquet"
TRANSCRIPTS = "transcripts.parquet"
MORPHOLOGY_FOCUS = "morphology_focus"


class XeniumReadError(CellamaInputError):
    """A Xenium folder that is missing a file or has a broken one."""


def _check_experiment(root: Path) -> dict:
    try:
        return json.loads((root / EXPERIMENT_FILE).read_text())
    except (OSError, ValueError) as err:
        raise XeniumReadError(f"{root / EXPERIMENT_FILE} is not readable JSON ({err})") from None


def _check_h5(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "matrix" not in f:
                raise XeniumReadError(f"{path} has no 'matrix' group; is it a 10x feature matrix?")
            m = f["matrix"]
            for key in ("data", "indices", "indptr", "shape", "barcodes", "features"):
                if key not in m:
                    raise XeniumReadError(f"{path} lacks matrix/{key}; the file is incomplete")
            _ = m["data"][-1:] if m["data"].shape[0] else None
    except XeniumReadError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises many types for truncated files
        raise XeniumReadError(f"{path} is broken or truncated ({type(err).__name__}: {err})") from None


def _check_zip(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise XeniumReadError(f"{path} is corrupt (member {bad})")
    except zipfile.BadZipFile as err:
        raise XeniumReadError(f"{path} is not a readable zip archive ({err})") from None


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).metadata  # noqa: B018 - reading the footer validates the file
    except Exception as err:  # noqa: BLE001
        raise XeniumReadError(f"{path} is broken or truncated ({type(err).__name__}: {err})") from None


def _damaged_parquet(root: Path, transcripts: bool = False) -> str | None:
    """After a failed read: the message naming the first parquet file that cannot be read in full."""
    import pyarrow.parquet as pq

    names = [CELLS_PARQUET, CELL_BOUNDARIES, NUCLEUS_BOUNDARIES] + ([TRANSCRIPTS] if transcripts else [])
    for name in names:
        path = root / name
        if not path.exists():
            continue
        try:
            pq.read_table(path)
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return f"{path} is damaged ({type(err).__name__}: {first}); copy it again from the instrument output"
    return None


def check_xenium_folder(root: Path, *, need_image: bool = False, need_boundaries: bool = False,
                        need_labels: bool = False) -> dict:
    """Check the files a read will touch; return the parsed ``experiment.xenium``."""
    experiment = _check_experiment(root)
    needed = [MATRIX_FILE, CELLS_PARQUET]
    if need_labels:
        needed.append(CELLS_ZARR)
    if need_boundaries:
        needed.append(CELL_BOUNDARIES)
    for name in needed:
        if not (root / name).exists():
            raise XeniumReadError(f"{root} is missing {name}; copy the complete Xenium output folder")
    _check_h5(root / MATRIX_FILE)
    _check_parquet(root / CELLS_PARQUET)
    if need_labels:
        _check_zip(root / CELLS_ZARR)
    if need_boundaries:
        _check_parquet(root / CELL_BOUNDARIES)
    if need_image:
        _check_image(root)
    return experiment


def _check_image(root: Path) -> None:
    """The morphology image exists and every OME-TIFF of it has a readable header."""
    import tifffile

    folder = root / MORPHOLOGY_FOCUS
    files = sorted(folder.glob("*.ome.tif")) if folder.is_dir() else []
    if not files and (root / "morphology_focus.ome.tif").exists():  # XOA 1.x
        files = [root / "morphology_focus.ome.tif"]
    if not files:
        raise XeniumReadError(f"{root} has no morphology image ({MORPHOLOGY_FOCUS}/*.ome.tif)")
    for path in files:
        try:
            with tifffile.TiffFile(path) as tif:
                _ = tif.series[0].shape
        except Exception as err:  # noqa: BLE001 - tifffile raises many types for broken files
            raise XeniumReadError(f"{path} is broken or truncated ({type(err).__name__}: {err})") from None


def read_xenium(path: str | Path, *, table_only: bool = False, labels: bool = True, image: bool = True,
                boundaries: bool = False, transcripts: bool = False):
    """Read a Xenium folder as a SpatialData object (only the elements asked for)."""
    root = xenium_root(path)
    if root is None:
        raise XeniumReadError(f"{path} is not a Xenium output folder (no {EXPERIMENT_FILE})")
    if table_only:
        labels = image = boundaries = transcripts = False
    check_xenium_folder(root, need_image=image, need_boundaries=boundaries, need_labels=labels)
    import spatialdata_io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return spatialdata_io.xenium(
                root,
                cells_boundaries=boundaries,
                nucleus_boundaries=False,
                cells_as_circles=False,
                cells_labels=labels,
                nucleus_labels=False,
                transcripts=transcripts,
                morphology_mip=False,
                morphology_focus=image,
                aligned_images=False,
            )
    except CellamaInputError:
        raise
    except Exception as err:  # noqa: BLE001 - report which run failed and why, in one line
        damaged = _damaged_parquet(root, transcripts=transcripts)
        if damaged is not None:
            raise XeniumReadError(damaged) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise XeniumReadError(f"spatialdata-io could not read {root}: {type(err).__name__}: {first}") from None


def read_xenium_table(path: str | Path):
    """The cells x genes AnnData of a Xenium run (index: cell_id, obsm['spatial'] in microns)."""
    sdata = read_xenium(path, table_only=True)
    table = sdata.tables["table"]
    table.obs_names = table.obs["cell_id"].astype(str).to_numpy()
    table.obs_names.name = None
    return table


GRAPH_CLUSTERS = "analysis/clustering/gene_expression_graphclust/clusters.csv"


def read_xenium_clusters(root: str | Path, clustering: str = GRAPH_CLUSTERS):
    """Xenium Onboard Analysis clusters of a run (``Barcode,Cluster``) as a Series by cell_id.

    Returns None when the run has no such file (not every run ships ``analysis/``).
    """
    import pandas as pd

    path = Path(root) / clustering
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001
        raise XeniumReadError(f"{path} is not a readable clusters CSV ({err})") from None
    if df.shape[1] < 2:
        raise XeniumReadError(f"{path} should have two columns: Barcode,Cluster")
    name = Path(clustering).parent.name
    series = pd.Series(df.iloc[:, 1].astype(str).to_numpy(), index=df.iloc[:, 0].astype(str).to_numpy(), name=name)
    series.index.name = "cell_id"
    return series
