"""Demo data: a small Xenium run built from real PBMC profiles, and its matched reference.

:func:`make_demo` writes, offline and deterministically, into a cache folder::

    <cache root>/demo-v1/
        xenium/                 a Xenium Onboard Analysis 2.x output folder (readable by
                                ``spatialdata_io.xenium(path)`` with default arguments)
        reference.h5ad          labelled scRNA reference, label column ``cell_type``, counts in X
        truth.csv               cell_id,cell_type,niche of every spatial cell (the planted truth)
        README.md               what is real and what is synthetic
        manifest.json           written last; its presence marks a complete build

The cache root is :func:`napari_cellama.paths.cache_root` (``$NAPARI_CELLAMA_CACHE`` if set,
else the user cache folder that the embedding cache also uses). A build happens in a temporary sibling folder that is
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

from .._constants import CACHE_ENV
from ..paths import DEMO_NAME, cache_root
from ._design import HMULTI_GENES, NICHES, PIXEL_SIZE, SEED
from ._expression import counts_from_lognorm
from ._tissue import decode_cell_ids, encode_cell_ids
from .demo import DemoData, iter_make_demo, make_demo

__all__ = [
    "CACHE_ENV",
    "DEMO_NAME",
    "HMULTI_GENES",
    "NICHES",
    "PIXEL_SIZE",
    "SEED",
    "DemoData",
    "cache_root",
    "counts_from_lognorm",
    "decode_cell_ids",
    "encode_cell_ids",
    "iter_make_demo",
    "make_demo",
]
