"""A Xenium run opened for display: cells table, cell-label pyramid, image pyramid (Qt-free).

:func:`open_xenium_run` reads a Xenium output folder with ``spatialdata_io.xenium`` (through
:func:`napari_cellama.io.xenium.read_xenium`, which checks the files first) and prepares
what a viewer needs, with the same units everywhere (microns):

* ``table``: the cells x genes AnnData of spatialdata-io (``obs_names`` = ``cell_id``,
  ``obsm['spatial']`` = centroids in microns) plus ``obs['label']``, the integer of each
  cell in the cell-label image (spatialdata-io's ``cell_labels`` mapping from
  ``cells.zarr.zip``).
* ``cell_levels``: the cell-label image as a pyramid. Level 0 is spatialdata-io's
  ``cell_labels`` raster (read lazily from ``cells.zarr.zip``); level ``k`` takes every
  ``2**k``-th pixel of level 0 (labels must not be averaged), which gives the shapes of the
  image pyramid (``ceil(n / 2**k)``). Levels that fit in :data:`LABEL_LEVEL_MEMORY` bytes are
  computed once, in a single pass over the level-0 chunks; larger levels stay lazy (dask).
* ``image_levels``: per channel, the levels of the morphology OME-TIFF. spatialdata-io
  defines the image (file, channel names, ``Identity`` transform); the pixels are taken from
  the pyramid levels stored in the OME-TIFF itself, opened lazily tile by tile through
  tifffile's zarr interface. (spatialdata-io's own pyramid is computed from a single dask
  chunk of the full-resolution plane, so every tile would decode the whole plane; it is
  used only when the file has no matching pyramid.)
* ``image_contrast``: per channel, contrast limits from the data (0.5th and 99.9th
  percentiles of the coarsest level with at least 65,536 pixels), never from the dtype.

Coordinates. spatialdata-io gives shapes and points a ``Scale(1 / pixel_size)`` to the
global (level-0 pixel) system and images/labels ``Identity``; pixel ``i`` covers
``[i, i + 1)`` pixel units, i.e. ``[i, i + 1) * pixel_size`` microns (the centroid of a
cell's mask pixels lies half a pixel below its micron centroid divided by the pixel size).
A viewer that places pixel centres at integer positions (napari) therefore shows rasters
with ``scale = pixel_size`` and ``translate = pixel_size / 2`` to be aligned with points
given in microns: see :func:`raster_placement`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    DEFAULT_MAX_TRANSCRIPTS,
    LABEL_ID,
    MIN_TRANSCRIPT_QV,
    STAGE_READ_XENIUM,
)
from ..core._progress import run
from ..validators import CellamaInputError
from .xenium import MORPHOLOGY_FOCUS, TRANSCRIPTS, XeniumReadError, read_xenium, xenium_root

LABEL_LEVEL_MEMORY = 64 * 2**20
"""Label pyramid levels up to this many bytes are held in memory; larger ones stay lazy."""

MIN_LEVEL_SIZE = 256
"""Pyramid levels are made down to the first one whose shorter side is at most this."""

_CONTRAST_PIXELS = 65536


@dataclass
class XeniumRun:
    """Everything a viewer shows of one Xenium run (see the module docstring)."""

    root: Path
    experiment: dict
    pixel_size: float
    table: object  # anndata.AnnData
    cell_levels: list = field(default_factory=list)
    image_levels: dict = field(default_factory=dict)
    image_contrast: dict = field(default_factory=dict)
    image_source: str = ""

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def n_cells(self) -> int:
        return int(self.table.n_obs)


def raster_placement(pixel_size: float) -> dict:
    """napari ``scale``/``translate`` that put a Xenium raster in microns (see module docstring)."""
    return {"scale": (pixel_size, pixel_size), "translate": (pixel_size / 2, pixel_size / 2)}


def open_xenium_run(path: str | Path, *, image: bool = True, labels: bool = True) -> XeniumRun:
    """Read a Xenium folder for display (synchronous wrapper of :func:`iter_open_xenium_run`)."""
    return run(iter_open_xenium_run(path, image=image, labels=labels))


def iter_open_xenium_run(path: str | Path, *, image: bool = True, labels: bool = True) -> Iterator:
    """Generator yielding ``(stage, done, total)``; returns a :class:`XeniumRun`.

    Raises :class:`XeniumReadError` naming the missing or broken file.
    """
    root = xenium_root(path)
    if root is None:
        raise XeniumReadError(f"{path} is not a Xenium output folder (no experiment.xenium)")
    total = 1 + int(labels) + int(image)
    yield (STAGE_READ_XENIUM, 0, total)
    sdata = read_xenium(root, labels=labels, image=image)
    import json

    experiment = json.loads((root / "experiment.xenium").read_text())
    try:
        pixel_size = float(experiment["pixel_size"])
    except (KeyError, TypeError, ValueError):
        raise XeniumReadError(f"{root / 'experiment.xenium'} has no valid pixel_size") from None
    table = sdata.tables["table"]
    table.obs_names = table.obs[CELL_ID].astype(str).to_numpy()
    table.obs_names.name = None
    if "cell_labels" in table.obs:
        table.obs[LABEL_ID] = table.obs["cell_labels"].astype(np.int64).to_numpy()
    out = XeniumRun(root=root, experiment=experiment, pixel_size=pixel_size, table=table)
    done = 1
    yield (STAGE_READ_XENIUM, done, total)
    n_levels = None
    if image:
        out.image_levels, out.image_source, files = _image_levels(root, sdata)
        for channel, levels in out.image_levels.items():
            out.image_contrast[channel] = contrast_limits(
                levels, files.get(channel, root / MORPHOLOGY_FOCUS)
            )
        n_levels = len(next(iter(out.image_levels.values())))
        done += 1
        yield (STAGE_READ_XENIUM, done, total)
    if labels:
        if LABEL_ID not in table.obs:
            raise XeniumReadError(
                f"{root / 'cells.zarr.zip'}: the cell ids of its masks do not match cells.parquet"
            )
        level0 = sdata.labels["cell_labels"]["scale0"]["image"].data
        if n_levels is None:
            n_levels = _n_levels(level0.shape)
        try:
            out.cell_levels = label_pyramid(level0, n_levels)
        except Exception as err:  # noqa: BLE001 - a broken mask chunk is a broken file
            raise XeniumReadError(
                f"{root / 'cells.zarr.zip'} has unreadable cell masks ({type(err).__name__}: {err})"
            ) from None
        done += 1
        yield (STAGE_READ_XENIUM, done, total)
    return out


def _n_levels(shape) -> int:
    n, side = 1, min(shape[-2:])
    while side > MIN_LEVEL_SIZE:
        side = -(-side // 2)
        n += 1
    return n


def label_pyramid(level0, n_levels: int, max_bytes: int = LABEL_LEVEL_MEMORY) -> list:
    """Levels ``[level0, level0[::2, ::2], ...]``; small ones computed once in one pass.

    ``level0`` is a 2-D array or dask array. Levels of at most ``max_bytes`` are numpy
    arrays filled chunk by chunk (never holding the full level 0 unless it is small itself);
    larger levels are lazy strided views (dask).
    """
    import dask.array as da

    level0 = da.asarray(level0)
    h, w = level0.shape
    itemsize = np.dtype(level0.dtype).itemsize
    shapes = [(-(-h // 2**k), -(-w // 2**k)) for k in range(n_levels)]
    in_memory = [k for k, s in enumerate(shapes) if s[0] * s[1] * itemsize <= max_bytes]
    levels: list = [level0[:: 2**k, :: 2**k] if k else level0 for k in range(n_levels)]
    if not in_memory:
        return levels
    first = in_memory[0]
    step = 2**first
    # chunk edges of level 0 must be multiples of every in-memory stride
    rows = _aligned_edges(level0.chunks[0], 2 ** (n_levels - 1))
    cols = _aligned_edges(level0.chunks[1], 2 ** (n_levels - 1))
    arrays = {k: np.zeros(shapes[k], dtype=level0.dtype) for k in in_memory}
    for r0, r1 in pairwise(rows):
        for c0, c1 in pairwise(cols):
            block = np.asarray(level0[r0:r1:step, c0:c1:step])
            for k in in_memory:
                f = 2 ** (k - first)
                sub = block[::f, ::f]
                rr, cc = r0 // 2**k, c0 // 2**k
                arrays[k][rr : rr + sub.shape[0], cc : cc + sub.shape[1]] = sub
    for k in in_memory:
        levels[k] = arrays[k]
    return levels


def _aligned_edges(chunks, multiple: int) -> list[int]:
    """Chunk boundaries of one axis, merged so every inner edge is a multiple of ``multiple``."""
    edges = [0]
    pos = 0
    for c in chunks:
        pos += c
        if pos % multiple == 0 or pos == sum(chunks):
            edges.append(pos)
    if edges[-1] != sum(chunks):
        edges.append(sum(chunks))
    return edges


_FOCUS_FILE = re.compile(r"^morphology_focus_(\d{4})\.ome\.tif$")


def _image_levels(root: Path, sdata) -> tuple[dict, str, dict]:
    """Per channel: the OME-TIFF's own pyramid levels (or spatialdata-io's), source, files."""
    element = sdata.images.get("morphology_focus")
    if element is None:
        raise XeniumReadError(f"{root} has no morphology image ({MORPHOLOGY_FOCUS}/)")
    scale0 = element["scale0"]["image"]
    channels = [str(c) for c in scale0.coords["c"].values] if "c" in scale0.coords else ["image"]
    full_shape = tuple(scale0.shape[-2:])
    folder = root / MORPHOLOGY_FOCUS
    files = (
        sorted(p for p in folder.glob("*.ome.tif") if _FOCUS_FILE.match(p.name))
        if folder.is_dir()
        else []
    )
    if len(files) == len(channels):
        out = {}
        for channel, path in zip(channels, files):
            levels = tiff_pyramid(path)
            if tuple(levels[0].shape[-2:]) != full_shape or levels[0].ndim != 2:
                break
            out[channel] = levels
        else:
            return out, "ome-tiff pyramid", dict(zip(channels, files))
    levels = [element[k]["image"].data for k in sorted(element.keys(), key=lambda s: int(s[5:]))]
    return (
        {c: [lvl[i] for lvl in levels] for i, c in enumerate(channels)},
        "spatialdata-io pyramid",
        {},
    )


def tiff_pyramid(path: Path) -> list:
    """The levels of a (multiscale) OME-TIFF as lazy zarr arrays, finest first."""
    import tifffile
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for broken files
        raise XeniumReadError(
            f"{path} is not a readable OME-TIFF ({type(err).__name__}: {err})"
        ) from None
    if isinstance(node, zarr.Array):
        return [node]
    return [node[k] for k in sorted(node.array_keys(), key=int)]


def contrast_limits(levels, where: Path | str = "image") -> tuple[float, float]:
    """(0.5th, 99.9th) percentile of the coarsest level with >= 65,536 pixels."""
    pick = levels[-1]
    for lvl in reversed(levels):
        pick = lvl
        if np.prod(lvl.shape[-2:]) >= _CONTRAST_PIXELS:
            break
    try:
        data = np.asarray(pick[...])
    except Exception as err:  # noqa: BLE001
        raise XeniumReadError(
            f"{where}: the image pixels cannot be read ({type(err).__name__}: {err})"
        ) from None
    lo, hi = (float(v) for v in np.percentile(data, [0.5, 99.9]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


# --------------------------------------------------------------------------- transcripts


@dataclass
class TranscriptSample:
    """Transcripts of chosen genes, subsampled to at most ``max_points``."""

    points: pd.DataFrame
    """Columns ``x``, ``y`` (microns), ``gene`` (categorical), ``cell_id``, ``qv``."""
    n_total: int
    """Transcripts of these genes with qv >= :data:`MIN_TRANSCRIPT_QV` before subsampling."""
    per_gene_total: dict[str, int]

    @property
    def n_shown(self) -> int:
        return len(self.points)

    @property
    def subsampled(self) -> bool:
        return self.n_shown < self.n_total


def read_transcripts(
    path: str | Path, genes, max_points: int = DEFAULT_MAX_TRANSCRIPTS, seed: int = 0
) -> TranscriptSample:
    """Transcripts of ``genes`` (qv >= 20, as XOA counts them), at most ``max_points``.

    Above ``max_points`` a uniform random subset (fixed ``seed``) is kept, so every gene
    keeps its share; ``n_total`` and ``per_gene_total`` give the numbers before.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = xenium_root(path)
    if root is None:
        raise XeniumReadError(f"{path} is not a Xenium output folder (no experiment.xenium)")
    genes = [str(g) for g in genes]
    if not genes:
        raise CellamaInputError("choose at least one gene to show its transcripts")
    file = root / TRANSCRIPTS
    if not file.exists():
        raise XeniumReadError(
            f"{root} is missing {TRANSCRIPTS}; copy the complete Xenium output folder"
        )
    try:
        table = pq.read_table(
            file,
            columns=["feature_name", "x_location", "y_location", "cell_id", "qv"],
            filters=[("feature_name", "in", genes), ("qv", ">=", MIN_TRANSCRIPT_QV)],
        )
    except Exception as err:  # noqa: BLE001
        raise XeniumReadError(
            f"{file} is broken or truncated ({type(err).__name__}: {err})"
        ) from None
    table = table.filter(pc.is_valid(table.column("feature_name")))
    per_gene = {g: 0 for g in genes}
    for item in pc.value_counts(table.column("feature_name")).to_pylist():
        per_gene[str(item["values"])] = int(item["counts"])
    if not any(per_gene.values()):
        raise CellamaInputError(
            f"no transcripts of {', '.join(genes)} in {file.name}; check the gene names"
        )
    n_total = table.num_rows
    if n_total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n_total, size=max_points, replace=False))
        table = table.take(keep)
    df = table.to_pandas()
    cell = df["cell_id"]
    if len(cell) and isinstance(cell.iloc[0], bytes):
        cell = cell.str.decode("utf-8")
    points = pd.DataFrame(
        {
            "x": df["x_location"].to_numpy(np.float32),
            "y": df["y_location"].to_numpy(np.float32),
            "gene": pd.Categorical(df["feature_name"].astype(str), categories=genes),
            CELL_ID: cell.astype(str).to_numpy(),
            "qv": df["qv"].to_numpy(np.float32),
        }
    )
    return TranscriptSample(points=points, n_total=int(n_total), per_gene_total=per_gene)
