"""Training pairs for fine-tuning: PCA coordinates, pair sampling and labels, augmentation
views, prototype pairs, the held-out split (steps 1-5 of the recipe in
:mod:`napari_cellama.core.finetune`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..._constants import (
    DEFAULT_FINETUNE_HVG,
    DEFAULT_FINETUNE_PCS,
    DEFAULT_RANDOM_STATE,
)
from ...validators import (
    CellamaInputError,
    check_matrix,
)
from ..counts import is_raw_counts
from ..panel import normalise_symbol
from ..transfer import l2_normalise

KIND_NEIGHBOR = "neighbour"
KIND_RANDOM = "random"
KIND_PROTO_POS = "prototype (own type)"
KIND_PROTO_NEG = "prototype (other type)"

# --------------------------------------------------------------------------- PCA
def pca_coordinates(
    adata: ad.AnnData,
    n_hvg: int = DEFAULT_FINETUNE_HVG,
    n_pcs: int = DEFAULT_FINETUNE_PCS,
    seed: int = DEFAULT_RANDOM_STATE,
) -> tuple[np.ndarray, dict]:
    """PCA of the normalised, log-transformed highly variable genes; returns ``(coords, info)``."""
    import scanpy as sc

    x = adata.X if sp.issparse(adata.X) else np.asarray(adata.X)
    check_matrix(x, "reference")
    a = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32), var=pd.DataFrame(index=adata.var_names.astype(str)))
    a.var_names_make_unique()
    counts = is_raw_counts(a.X)
    if counts:
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    n_hvg = int(n_hvg)
    use_hvg = a.n_vars > n_hvg
    if use_hvg:
        sc.pp.highly_variable_genes(a, n_top_genes=n_hvg)
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    n_comps = int(max(1, min(n_pcs, a.n_obs - 1, a.n_vars - 1)))
    sc.pp.pca(a, n_comps=n_comps, random_state=seed)
    info = {"input": "counts" if counts else "log-normalised", "n_genes_pca": int(a.n_vars),
            "highly_variable_selection": bool(use_hvg), "n_pcs": n_comps}
    return np.asarray(a.obsm["X_pca"], dtype=np.float32), info


# --------------------------------------------------------------------------- pairs
@dataclass
class PairSet:
    """Sentence pairs with similarity labels."""

    a: list[str]
    b: list[str]
    label: np.ndarray
    kind: np.ndarray
    top_k: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"sentence_a": self.a, "sentence_b": self.b, "label": self.label,
                             "kind": self.kind, "top_k": self.top_k})

    def counts(self) -> dict:
        return {str(k): int(v) for k, v in pd.Series(self.kind).value_counts().items()}

    @staticmethod
    def concat(parts: Sequence[PairSet]) -> PairSet:
        return PairSet(
            [s for p in parts for s in p.a],
            [s for p in parts for s in p.b],
            np.concatenate([p.label for p in parts]).astype(np.float32),
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.top_k for p in parts]),
        )

    def shuffled(self, rng: np.random.Generator) -> PairSet:
        o = rng.permutation(len(self))
        return PairSet([self.a[i] for i in o], [self.b[i] for i in o], self.label[o], self.kind[o], self.top_k[o])


def sample_cell_pairs(
    pca: np.ndarray,
    cells: np.ndarray,
    n_pairs: int,
    neighbor_fraction: float,
    n_neighbors: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of neighbour pairs and random pairs among ``cells`` and their kind."""
    cells = np.asarray(cells, dtype=np.int64)
    m = len(cells)
    if m < 2:
        raise CellamaInputError("at least two cells are needed to draw training pairs")
    n_neigh = round(n_pairs * neighbor_fraction)
    n_rand = n_pairs - n_neigh
    k = min(int(n_neighbors), m - 1)
    ii, jj, kinds = [], [], []
    if n_neigh and k:
        n_anchor = math.ceil(n_neigh / k)
        anchors = rng.choice(m, size=n_anchor, replace=n_anchor > m)
        z = l2_normalise(pca[cells])
        for start in range(0, n_anchor, 2048):
            block = anchors[start:start + 2048]
            s = z[block] @ z.T
            s[np.arange(len(block)), block] = -np.inf  # never pair a cell with itself
            nb = np.argpartition(-s, k - 1, axis=1)[:, :k]
            ii.append(np.repeat(cells[block], k))
            jj.append(cells[nb.ravel()])
        i_n, j_n = np.concatenate(ii)[:n_neigh], np.concatenate(jj)[:n_neigh]
        ii, jj = [i_n], [j_n]
        kinds.append(np.full(len(i_n), KIND_NEIGHBOR, dtype=object))
    if n_rand:
        a = rng.integers(0, m, size=n_rand)
        b = (a + rng.integers(1, m, size=n_rand)) % m  # uniform over the other cells
        ii.append(cells[a])
        jj.append(cells[b])
        kinds.append(np.full(n_rand, KIND_RANDOM, dtype=object))
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(kinds)


def pair_labels(pca: np.ndarray, i: np.ndarray, j: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Cosine similarity of the PCA vectors clipped to [0, 1]; 0 where any group column differs."""
    z = l2_normalise(pca)
    lab = np.clip(np.einsum("ij,ij->i", z[i], z[j]), 0.0, 1.0).astype(np.float32)
    if groups is not None and groups.size:
        differ = (groups[i] != groups[j]).any(axis=1)
        lab[differ] = 0.0
    return lab


def _group_codes(obs: pd.DataFrame, columns: Sequence[str]) -> np.ndarray | None:
    if not columns:
        return None
    codes = [pd.factorize(obs[c].astype(object).where(obs[c].notna(), "\x00missing").astype(str))[0]
             for c in columns]
    return np.stack(codes, axis=1)


def _split_cells(n: int, labels: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    if fraction <= 0:
        return idx, np.zeros(0, dtype=np.int64)
    n_val = max(2, round(n * fraction))
    if n - n_val < 2:
        raise CellamaInputError(f"the reference has too few cells ({n}) to hold out {fraction:.0%} for validation")
    from sklearn.model_selection import train_test_split

    strat = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
            strat = labels
    train, val = train_test_split(idx, test_size=n_val, stratify=strat, random_state=seed)
    return np.sort(train), np.sort(val)


def _prototype_pairs(
    cells: np.ndarray,
    cell_type_index: np.ndarray,
    n_pairs: int,
    views: dict[int, list[list[str]]],
    top_ks: list[int],
    proto_text: list[str],
    positive: float,
    negative: float,
    rng: np.random.Generator,
    view_rng: np.random.Generator | None = None,
) -> PairSet | None:
    """(cell, own prototype) and (cell, other prototype) pairs, cells drawn uniformly over types."""
    cells = np.asarray(cells)
    t = cell_type_index[cells]
    have = t >= 0
    cells, t = cells[have], t[have]
    types = np.unique(t)
    n_types = len(proto_text)
    if len(types) == 0 or n_pairs < 2 or n_types < 2:
        return None
    n_cells = n_pairs // 2
    chosen_types = types[rng.integers(0, len(types), size=n_cells)]
    by_type = {ty: cells[t == ty] for ty in types}
    chosen = np.array([by_type[ty][rng.integers(0, len(by_type[ty]))] for ty in chosen_types], dtype=np.int64)
    other = (chosen_types + rng.integers(1, n_types, size=n_cells)) % n_types
    ks = np.asarray(top_ks)[rng.integers(0, len(top_ks), size=n_cells)]
    view_rng = rng if view_rng is None else view_rng
    cell_text = [_pick(views[int(k)], np.array([c]), view_rng)[0] for k, c in zip(ks, chosen)]
    a = cell_text + cell_text
    b = [proto_text[int(x)] for x in chosen_types] + [proto_text[int(x)] for x in other]
    label = np.concatenate([np.full(n_cells, positive), np.full(n_cells, negative)]).astype(np.float32)
    kind = np.concatenate([np.full(n_cells, KIND_PROTO_POS, dtype=object), np.full(n_cells, KIND_PROTO_NEG, dtype=object)])
    return PairSet(a, b, label, kind, np.concatenate([ks, ks]))


def downsample(x, keep: float, rng: np.random.Generator, counts: bool | None = None):
    """A down-sampled copy of a cells x genes matrix (CSR float32).

    Integer counts: binomial thinning, each molecule kept with probability ``keep``.
    Other values (e.g. log-normalised): each detected gene kept with probability ``keep``.
    """
    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    counts = is_raw_counts(m) if counts is None else counts
    if counts:
        m.data = rng.binomial(np.rint(m.data).astype(np.int64), keep).astype(np.float32)
    else:
        m.data[rng.random(m.data.size) >= keep] = 0.0
    m.eliminate_zeros()
    return m


def _pick(views: Sequence[Sequence[str]], cells: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One sentence per cell, each from a uniformly chosen view (view 0: the cell itself)."""
    v = rng.integers(0, len(views), size=len(cells)) if len(views) > 1 else np.zeros(len(cells), dtype=np.int64)
    return [views[int(a)][int(c)] for a, c in zip(v, cells)]


def _cell_pairset(pca, cells, n_pairs, neighbor_fraction, n_neighbors, groups, views, top_ks, rng,
                  view_rng=None) -> PairSet:
    """Cell pairs; ``views[k]`` lists the sentences of every cell at top-k ``k`` (own first, then copies).

    Views are drawn with ``view_rng`` (default ``rng``), so that augmenting leaves the pairs,
    and the pairs drawn after them, as they are without augmentation.
    """
    view_rng = rng if view_rng is None else view_rng
    i, j, kind = sample_cell_pairs(pca, cells, n_pairs, neighbor_fraction, n_neighbors, rng)
    lab = pair_labels(pca, i, j, groups)
    ks = np.asarray(top_ks)[rng.permutation(len(i)) % len(top_ks)]  # equal share per top-k value
    a = np.empty(len(i), dtype=object)
    b = np.empty(len(i), dtype=object)
    for k in np.unique(ks):
        sel = np.flatnonzero(ks == k)
        a[sel] = _pick(views[int(k)], i[sel], view_rng)
        b[sel] = _pick(views[int(k)], j[sel], view_rng)
    return PairSet(list(a), list(b), lab, kind, ks)



def _restrict_genes(adata: ad.AnnData, genes: Sequence[str] | None) -> tuple[object, list[str]]:
    x = adata.X if sp.issparse(adata.X) else np.asarray(adata.X)
    names = [str(g) for g in adata.var_names]
    if genes is None:
        return x, names
    keep = normalise_symbol(names).isin(normalise_symbol(genes))
    if not keep.any():
        raise CellamaInputError(
            f"none of the {len(genes)} panel genes is in the reference ({len(names)} genes); "
            "check that both use gene symbols of the same species"
        )
    cols = np.flatnonzero(keep)
    return x[:, cols], [names[i] for i in cols]


def _match_prototypes(labels: pd.Series, markers: Mapping[str, Sequence[str]]) -> tuple[dict, list]:
    """Reference label -> marker-table type (case- and white-space-insensitive); unmatched labels."""
    by_key = {str(t).strip().casefold(): t for t in markers}
    mapping, unmatched = {}, []
    for lab in pd.unique(labels.dropna().astype(str)):
        t = by_key.get(lab.strip().casefold())
        if t is None:
            unmatched.append(lab)
        else:
            mapping[lab] = t
    return mapping, unmatched
