"""The demo's design: sizes, seed, planted niches and their composition, the hMulti panel genes."""

from __future__ import annotations

import pandas as pd

PIXEL_SIZE = 0.2125
"""Image pixel size in microns (the Xenium instrument's)."""

SEED = 20260121
N_PANEL = 300
N_MARKERS_PER_TYPE = 15
TISSUE_SIZE = (400.0, 300.0)  # x, y in um
MARGIN = 20.0  # um of empty slide around the tissue
SPACING = 9.5  # um between neighbouring nuclei
EXPANSION = 3.0  # um of nucleus expansion that makes the cell boundary
HMULTI_GENES_CSV = "demo_panel_genes.csv"
"""Package data: the 47 pbmc68k genes that are in the 10x Xenium hMulti v1 panel, with their
Ensembl ids (shipped with the package, so every machine builds the same demo)."""


def _hmulti_table() -> pd.DataFrame:
    from importlib.resources import files

    with (files("napari_cellama") / "data" / HMULTI_GENES_CSV).open() as fh:
        return pd.read_csv(fh, comment="#", dtype=str)


HMULTI_GENES = _hmulti_table()["Gene"].tolist()

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


