"""Labelled settings of the quality benchmarks (issue 14), embedded once and reused.

Every setting is a reference (counts, labels) and a query (counts, labels) on the same genes:
the shared panel of the two, in the reference's order, exactly as :func:`shared_panel` makes it.
Each cell's sentence depends only on its own counts over those genes, so every cell is embedded
once per gene set (through the persistent embedding cache, ``$NAPARI_CELLAMA_CACHE``) and the
embeddings are reused by every split, seed and method.

Settings
--------
* ``pbmc68k/all`` and ``pbmc68k/hMulti``: scanpy's pbmc68k_reduced (700 cells, ``bulk_labels``),
  counts recovered from ``.raw`` (see accuracy_pbmc.py), all 765 genes or those of the 10x
  Human Multi-Tissue panel; stratified 50/50 split per seed.
* ``pbmc3k/panel477``, ``pbmc3k/panel150``, ``pbmc3k/panel30``: the shared pbmc3k reference
  (2,638 cells, 9 types) restricted to the 477-gene bone-marrow Xenium panel (458 of them in
  pbmc3k), and to 150 and 30 of the panel's genes: a seeded sample
  ``numpy.random.default_rng(PANEL_SEED).choice(sorted panel genes, n, replace=False)``
  (``PANEL_SEED`` 0; ``--panel-seed 1`` checks a second choice); stratified 50/50 split per seed.
* ``pbmc3k->pbmc68k``: reference pbmc3k, query pbmc68k_reduced (other donor, other protocol),
  on their shared genes; labels coarsened by ``COARSE`` (cells of other labels are dropped).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

DATA = Path("/work/shared/data")
PBMC3K = DATA / "references/pbmc3k/pbmc3k.h5ad"
XENIUM_FEATURES = DATA / "xenium_bone_marrow/cell_feature_matrix/features.tsv.gz"
HMULTI = DATA / "panels/Xenium_hMulti_v1_metadata.csv"
TOP_K = 20
PANEL_SEED = 0

COARSE = {
    # pbmc3k cell_type -> coarse
    "Naive CD4 T": "CD4 T", "Memory CD4 T": "CD4 T", "CD8 T": "CD8 T", "NK": "NK", "B": "B",
    "CD14+ Mono": "Mono", "FCGR3A+ Mono": "Mono", "DC": "DC",
    # pbmc68k bulk_labels -> coarse
    "CD4+/CD25 T Reg": "CD4 T", "CD4+/CD45RA+/CD25- Naive T": "CD4 T", "CD4+/CD45RO+ Memory": "CD4 T",
    "CD8+ Cytotoxic T": "CD8 T", "CD8+/CD45RA+ Naive Cytotoxic": "CD8 T", "CD56+ NK": "NK",
    "CD19+ B": "B", "CD14+ Monocyte": "Mono", "Dendritic": "DC",
}
"""Benchmark 3's coarse types. Dropped: pbmc3k Platelet; pbmc68k CD34+ (progenitors, absent from pbmc3k)."""


@dataclass
class Setting:
    name: str
    genes: list
    ref_counts: sp.csr_matrix
    ref_labels: np.ndarray
    query_counts: sp.csr_matrix | None = None  # None: split the reference 50/50 per seed
    query_labels: np.ndarray | None = None
    ref_emb: np.ndarray | None = None
    query_emb: np.ndarray | None = None

    def splits(self, seeds):
        """``(ref_X, ref_E, ref_y, q_X, q_E, q_y)`` per seed (one item when there is a fixed query)."""
        if self.query_counts is not None:
            yield None, (self.ref_counts, self.ref_emb, self.ref_labels,
                         self.query_counts, self.query_emb, self.query_labels)
            return
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(self.ref_labels))
        for seed in seeds:
            tr, te = train_test_split(idx, test_size=0.5, stratify=self.ref_labels, random_state=seed)
            tr, te = np.sort(tr), np.sort(te)
            yield seed, (self.ref_counts[tr], self.ref_emb[tr], self.ref_labels[tr],
                         self.ref_counts[te], self.ref_emb[te], self.ref_labels[te])


def xenium_panel() -> list[str]:
    with gzip.open(XENIUM_FEATURES, "rt") as fh:
        rows = [line.rstrip("\n").split("\t") for line in fh]
    return [r[1] for r in rows if r[2] == "Gene Expression"]


def panel_subset(n: int, seed: int = PANEL_SEED) -> list[str]:
    genes = sorted(xenium_panel())
    if n >= len(genes):
        return genes
    return sorted(np.random.default_rng(seed).choice(genes, n, replace=False).tolist())


def pbmc68k():
    import scanpy as sc
    from accuracy_pbmc import recover_counts

    a = sc.datasets.pbmc68k_reduced()
    counts, _ = recover_counts(a)
    return counts, [str(g) for g in a.raw.var_names], a.obs["bulk_labels"].astype(str).to_numpy(dtype=object)


def pbmc3k():
    import anndata as ad

    a = ad.read_h5ad(PBMC3K)
    return sp.csr_matrix(a.X, dtype=np.float32), [str(g) for g in a.var_names], \
        a.obs["cell_type"].astype(str).to_numpy(dtype=object)


def restrict(x, var_names, keep_genes):
    """Columns of ``keep_genes`` (matched upper-case), in ``var_names`` order; duplicates: first."""
    want = {g.strip().upper() for g in keep_genes}
    seen, cols, names = set(), [], []
    for i, g in enumerate(var_names):
        key = g.strip().upper()
        if key in want and key not in seen:
            seen.add(key)
            cols.append(i)
            names.append(g)
    return sp.csr_matrix(x[:, cols]), names


def embed(settings, embedder):
    from napari_cellama.core import cell_sentences

    for s in settings:
        s.ref_emb = embedder.encode(cell_sentences(s.ref_counts, s.genes, TOP_K))
        if s.query_counts is not None:
            s.query_emb = embedder.encode(cell_sentences(s.query_counts, s.genes, TOP_K))


def build(which=("b1", "b2", "b3"), panel_seed: int = PANEL_SEED) -> list[Setting]:
    out = []
    if "b1" in which or "b3" in which:
        c68, g68, y68 = pbmc68k()
    if "b2" in which or "b3" in which or "b4" in which:
        c3, g3, y3 = pbmc3k()
    if "b1" in which:
        out.append(Setting("pbmc68k/all", g68, c68, y68))
        hm = pd.read_csv(HMULTI)["Gene"].astype(str).tolist()
        x, names = restrict(c68, g68, hm)
        out.append(Setting("pbmc68k/hMulti", names, x, y68))
    if "b2" in which or "b4" in which:
        for n in (477, 150, 30):
            x, names = restrict(c3, g3, panel_subset(n, panel_seed))
            sfx = "" if panel_seed == PANEL_SEED or n == 477 else f"/s{panel_seed}"
            out.append(Setting(f"pbmc3k/panel{n}{sfx}", names, x, y3))
    if "b3" in which:
        shared = {g.upper() for g in g68}
        xr, names = restrict(c3, g3, shared)
        xq, qnames = restrict(c68, g68, names)
        order = [qnames.index(g) if g in qnames else [q.upper() for q in qnames].index(g.upper()) for g in names]
        xq = sp.csr_matrix(xq[:, order])
        yr = np.array([COARSE.get(v) for v in y3], dtype=object)
        yq = np.array([COARSE.get(v) for v in y68], dtype=object)
        kr, kq = pd.notna(yr), pd.notna(yq)
        out.append(Setting("pbmc3k->pbmc68k", names, xr[kr], yr[kr], xq[kq], yq[kq]))
    return out
