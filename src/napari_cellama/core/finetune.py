"""Fine-tuning the sentence model on cell sentences of a reference (CELLama 2.4).

Training pairs (:func:`build_pairs`), following the CELLama authors' recipe:

1. the reference is normalised (``normalize_total`` to 10,000 and ``log1p``, skipped when
   ``X`` is not integer-valued, i.e. already log-normalised), restricted to its
   ``n_hvg`` highly variable genes (all genes when it has fewer) and projected on
   ``n_pcs`` principal components;
2. a share ``neighbor_fraction`` of the pairs joins an anchor cell to one of its
   ``n_neighbors`` nearest cells by cosine similarity in PCA space; the rest joins two
   random cells;
3. the label of a pair is the cosine similarity of the two cells' PCA vectors, clipped
   to ``[0, 1]`` (the range CosineSimilarityLoss expects), and set to 0 when the cells
   differ in any of the ``metadata`` columns or in ``label_key``;
4. each pair is written with one of the ``top_k`` sentence lengths (several values mix;
   each gets an equal share of the pairs), in the same format as a transfer
   (:func:`napari_cellama.core.cell_sentences`);
5. optional augmentation (``augment_views`` > 0): each side of a training pair is
   written, with equal chance, from the cell itself or from one of ``augment_views``
   down-sampled copies of it (binomial thinning keeping a share ``augment_keep`` of its
   counts, as a shallower assay such as Xenium sees the cell; for log-normalised input a
   random share ``augment_keep`` of its detected genes is kept). The pair's label stays
   that of the two cells. A small reference then yields many distinct sentences per cell,
   so the model learns which genes matter rather than memorising its few hundred
   sentences. Validation pairs always use the cells' own sentences.

A share ``validation_fraction`` of the cells (stratified by ``label_key`` when given) is
held out before any pair is drawn; validation pairs are drawn among those cells only,
and the Spearman correlation between the model's cosine similarity and the label of the
validation pairs is reported before and after training.

Prototype guidance (CellRefine's idea, optional, needs ``label_key`` and a marker table):
each reference label that names a type of the marker table (names compared
case-insensitively) gets the prototype sentence of that type
(:func:`napari_cellama.core.prototypes.marker_sentences`). A share ``prototype_fraction``
(relative to the cell pairs) of extra pairs joins a cell sentence to a prototype
sentence: half to the cell's own prototype with label ``prototype_positive`` (1), half to
a randomly chosen other prototype with label ``prototype_negative`` (0). Their cells
are drawn type by type, uniformly over the types, so rare types get as many prototype
pairs as common ones. These pairs go through the same CosineSimilarityLoss, shuffled
among the cell pairs.

The optimisation loop is run here (not by ``SentenceTransformerTrainer``) so that it is
a generator: it yields ``("fine-tuning", step, total_steps)`` after every optimiser step
(the loss of that step is in :class:`FinetuneLog`), can be stopped between two steps, and
needs neither ``datasets`` nor ``accelerate``. It is the classic sentence-transformers
recipe: AdamW (weight decay 0.01, none on biases and LayerNorm), linear warm-up over
``warmup`` of the steps then linear decay, gradient clipping at norm 1.

The model is written only at the end, into a temporary folder that is then renamed to
``out``, so a cancelled or failed run leaves nothing half-written. The folder is a
regular sentence-transformers model: ``Embedder(out)`` and ``napari-cellama transfer
--model out`` load it. ``out/cellama_finetune.json`` records the parameters and the
validation correlations.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import (
    DEFAULT_FINETUNE_AUGMENT_KEEP,
    DEFAULT_FINETUNE_AUGMENT_VIEWS,
    DEFAULT_FINETUNE_BATCH_SIZE,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_HVG,
    DEFAULT_FINETUNE_LEARNING_RATE,
    DEFAULT_FINETUNE_NEIGHBOR_FRACTION,
    DEFAULT_FINETUNE_PAIR_NEIGHBORS,
    DEFAULT_FINETUNE_PAIRS,
    DEFAULT_FINETUNE_PCS,
    DEFAULT_FINETUNE_TOP_K,
    DEFAULT_FINETUNE_VALIDATION,
    DEFAULT_FINETUNE_WARMUP,
    DEFAULT_PROTOTYPE_FRACTION,
    DEFAULT_RANDOM_STATE,
    STAGE_FINETUNE,
    STAGE_LOAD_MODEL,
    STAGE_PAIRS,
    STAGE_SAVE_MODEL,
    STAGE_VALIDATE,
)
from ..validators import (
    CellamaInputError,
    check_label_key,
    check_matrix,
    check_metadata,
    check_top_k,
)
from ..atomic import write_dir
from ._progress import run
from .embed import load_model, resolve_device
from .panel import normalise_symbol
from .prototypes import MarkerSet, marker_sentences, read_markers, restrict_markers
from .sentences import cell_sentences, is_integer_valued
from .transfer import l2_normalise

FINETUNE_RECORD = "cellama_finetune.json"
"""File in the model folder recording how the model was fine-tuned."""

MAX_TRANSFER_EVAL_CELLS = 2000
"""Training cells (at most) that the held-out cells are label-transferred from during validation."""

KIND_NEIGHBOR = "neighbour"
KIND_RANDOM = "random"
KIND_PROTO_POS = "prototype (own type)"
KIND_PROTO_NEG = "prototype (other type)"


# --------------------------------------------------------------------------- checks
def _check_fraction(value, what: str, low_open: bool = False, high_open: bool = False) -> float:
    v = float(value)
    lo_ok = v > 0 if low_open else v >= 0
    hi_ok = v < 1 if high_open else v <= 1
    if not (np.isfinite(v) and lo_ok and hi_ok):
        rng = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise CellamaInputError(f"{what} must be in {rng}, got {value!r}")
    return v


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise CellamaInputError(f"{what} must be a positive whole number, got {value!r}")
    return int(value)


def _check_top_ks(top_k) -> list[int]:
    values = [top_k] if np.isscalar(top_k) else list(top_k)
    if not values:
        raise CellamaInputError("give at least one top-k value")
    return list(dict.fromkeys(check_top_k(v) for v in values))


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
    counts = is_integer_valued(a.X)
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
    counts = is_integer_valued(m) if counts is None else counts
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


# --------------------------------------------------------------------------- results
@dataclass
class FinetuneLog:
    """Live state of a fine-tuning run (read by progress bars: the loss of the last step)."""

    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float = float("nan")
    learning_rate: float = 0.0
    losses: list = field(default_factory=list)

    def smoothed_loss(self, window: int = 20) -> float:
        tail = self.losses[-window:]
        return float(np.mean(tail)) if tail else float("nan")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced."""

    model_path: Path
    validation: dict
    """``spearman_before`` / ``spearman_after`` (and Pearson) of predicted cosine vs label on
    the validation pairs; with prototypes also ``prototype_accuracy_before/after`` on the
    validation cells."""
    losses: list
    params: dict
    pair_counts: dict
    marker_set: MarkerSet | None = None
    prototype_map: dict = field(default_factory=dict)
    """Reference label -> marker-table type whose prototype guided it."""
    unmatched_labels: list = field(default_factory=list)
    """Reference labels that name no type of the marker table (no prototype pairs)."""
    seconds: float = 0.0

    def summary(self) -> str:
        v = self.validation
        lines = [
            f"fine-tuned model written to {self.model_path}",
            f"training pairs: {', '.join(f'{k} {n}' for k, n in self.pair_counts.get('train', {}).items())}",
            f"{self.params['total_steps']} steps ({self.params['epochs']} epoch(s), batch {self.params['batch_size']}) "
            f"in {self.seconds:.0f} s; loss first {self.losses[0]:.4f} -> last 20 steps {np.mean(self.losses[-20:]):.4f}"
            if self.losses else "no training step",
        ]
        if "spearman_before" in v:
            lines.append(
                f"validation ({v['n_pairs']} pairs of {v['n_cells']} held-out cells): Spearman of predicted "
                f"similarity vs label {v['spearman_before']:.3f} before -> {v['spearman_after']:.3f} after"
            )
        if "transfer_macro_f1_before" in v:
            lines.append(
                f"validation label transfer (held-out cells from the training cells, k=10): macro-F1 "
                f"{v['transfer_macro_f1_before']:.3f} before -> {v['transfer_macro_f1_after']:.3f} after, accuracy "
                f"{v['transfer_accuracy_before']:.3f} -> {v['transfer_accuracy_after']:.3f}"
            )
        if "prototype_accuracy_before" in v:
            lines.append(
                f"validation cells nearest to their own prototype: {v['prototype_accuracy_before']:.3f} before -> "
                f"{v['prototype_accuracy_after']:.3f} after"
            )
        if self.params.get("eval_steps"):
            kept = v.get("kept_step", self.params["total_steps"])
            what = ("the starting model (no step validated better)" if kept == 0 else f"the weights of step {kept}")
            lines.append(f"validated every {self.params['eval_steps']} steps; saved {what}"
                         if self.params.get("keep_best") else
                         f"validated every {self.params['eval_steps']} steps; saved the last weights")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def _iter_model_encode(model, sentences: Sequence[str], batch_size: int, stage: str) -> Iterator:
    """Embed with the model being trained (eval mode, no grad), yielding per batch."""
    import torch

    uniq, codes = np.unique(np.asarray(sentences, dtype=object).astype(str), return_inverse=True)
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    out = np.zeros((len(uniq), int(get_dim())), dtype=np.float32)
    model.eval()
    yield (stage, 0, len(uniq))
    order = np.argsort([len(s) for s in uniq], kind="stable")
    for start in range(0, len(uniq), batch_size):
        idx = order[start:start + batch_size]
        with torch.no_grad():
            emb = model.encode([str(uniq[i]) for i in idx], batch_size=batch_size, convert_to_numpy=True,
                               show_progress_bar=False)
        out[idx] = emb
        yield (stage, min(start + batch_size, len(uniq)), len(uniq))
    return out[codes]


def _pair_cosine(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", l2_normalise(emb_a), l2_normalise(emb_b))


def _correlations(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(pred) < 3 or np.ptp(label) == 0 or np.ptp(pred) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(pred, label).statistic), float(pearsonr(pred, label).statistic)


def _iter_validate(model, val: PairSet | None, proto_eval, transfer_eval, batch_size: int, tag: str) -> Iterator:
    out: dict = {}
    if val is not None and len(val):
        texts = list(val.a) + list(val.b)
        emb = yield from _iter_model_encode(model, texts, batch_size, f"{STAGE_VALIDATE} ({tag})")
        pred = _pair_cosine(emb[: len(val)], emb[len(val):])
        out["spearman"], out["pearson"] = _correlations(pred, val.label)
    if proto_eval is not None:
        cell_text, own, proto_text = proto_eval
        emb = yield from _iter_model_encode(model, list(cell_text) + list(proto_text), batch_size,
                                            f"{STAGE_VALIDATE} ({tag}, prototypes)")
        sim = l2_normalise(emb[: len(cell_text)]) @ l2_normalise(emb[len(cell_text):]).T
        out["prototype_accuracy"] = float((sim.argmax(axis=1) == own).mean())
    if transfer_eval is not None:
        from sklearn.metrics import f1_score

        from .._constants import DEFAULT_N_NEIGHBORS
        from .transfer import knn_transfer

        val_text, val_labels, train_text, train_labels = transfer_eval
        emb = yield from _iter_model_encode(model, list(val_text) + list(train_text), batch_size,
                                            f"{STAGE_VALIDATE} ({tag}, transfer)")
        table = knn_transfer(emb[: len(val_text)], emb[len(val_text):], train_labels,
                             k=min(DEFAULT_N_NEIGHBORS, len(train_labels)))
        pred = table["cell_type"].to_numpy()
        out["transfer_accuracy"] = float((pred == np.asarray(val_labels)).mean())
        out["transfer_macro_f1"] = float(f1_score(val_labels, pred, average="macro", labels=np.unique(val_labels),
                                                  zero_division=0))
    return out


def _finite(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else -np.inf


def _prepare_out(out: str | os.PathLike, overwrite: bool) -> Path:
    from ..io.destinations import check_model_folder  # replaces only an earlier fine-tuned model

    return check_model_folder(out, overwrite)


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


# --------------------------------------------------------------------------- main
def iter_finetune(
    reference: ad.AnnData,
    out: str | os.PathLike,
    *,
    model=None,
    label_key: str | None = None,
    metadata: Sequence[str] | None = None,
    top_k: int | Sequence[int] = DEFAULT_FINETUNE_TOP_K,
    n_pairs: int = DEFAULT_FINETUNE_PAIRS,
    neighbor_fraction: float = DEFAULT_FINETUNE_NEIGHBOR_FRACTION,
    n_neighbors: int = DEFAULT_FINETUNE_PAIR_NEIGHBORS,
    epochs: int = DEFAULT_FINETUNE_EPOCHS,
    batch_size: int = DEFAULT_FINETUNE_BATCH_SIZE,
    learning_rate: float = DEFAULT_FINETUNE_LEARNING_RATE,
    warmup: float = DEFAULT_FINETUNE_WARMUP,
    validation_fraction: float = DEFAULT_FINETUNE_VALIDATION,
    augment_views: int = DEFAULT_FINETUNE_AUGMENT_VIEWS,
    augment_keep: float = DEFAULT_FINETUNE_AUGMENT_KEEP,
    prototypes: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    prototype_fraction: float = DEFAULT_PROTOTYPE_FRACTION,
    prototype_positive: float = 1.0,
    prototype_negative: float = 0.0,
    genes: Sequence[str] | None = None,
    append_metadata: bool = False,
    n_hvg: int = DEFAULT_FINETUNE_HVG,
    n_pcs: int = DEFAULT_FINETUNE_PCS,
    seed: int = DEFAULT_RANDOM_STATE,
    device: str = "auto",
    allow_download: bool = False,
    overwrite: bool = False,
    eval_steps: int | None = None,
    keep_best: bool = True,
    log: FinetuneLog | None = None,
) -> Iterator:
    """Generator of :func:`finetune`: yields ``(stage, done, total)``, returns a :class:`FinetuneResult`.

    Closing the generator (e.g. ``thread_worker.quit()``) between two steps cancels the
    run; ``out`` is then left untouched.
    """
    t_start = time.perf_counter()
    # ---- checks (cheap, before anything heavy)
    top_ks = _check_top_ks(top_k)
    n_pairs = _check_positive_int(n_pairs, "the number of pairs")
    n_neighbors = _check_positive_int(n_neighbors, "the number of neighbours per anchor cell")
    n_pcs = _check_positive_int(n_pcs, "the number of principal components")
    if n_pcs < 2:
        raise CellamaInputError("the pair labels need at least 2 principal components (default "
                                f"{DEFAULT_FINETUNE_PCS}), got {n_pcs}")
    epochs = _check_positive_int(epochs, "the number of epochs")
    batch_size = _check_positive_int(batch_size, "the batch size")
    neighbor_fraction = _check_fraction(neighbor_fraction, "the share of neighbour pairs")
    warmup = _check_fraction(warmup, "the warm-up share", high_open=True)
    validation_fraction = _check_fraction(validation_fraction, "the validation share", high_open=True)
    prototype_fraction = _check_fraction(prototype_fraction, "the share of prototype pairs", low_open=True)
    augment_views = int(augment_views)
    if augment_views < 0:
        raise CellamaInputError(f"the number of down-sampled copies must be 0 or more, got {augment_views}")
    augment_keep = _check_fraction(augment_keep, "the share of counts kept in a down-sampled copy",
                                   low_open=True, high_open=True)
    if eval_steps is not None:
        eval_steps = _check_positive_int(eval_steps, "the evaluation interval (steps)")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise CellamaInputError(f"the learning rate must be a positive number, got {learning_rate!r}")
    metadata = check_metadata(reference, metadata, "reference")
    if label_key is not None:
        check_label_key(reference, label_key)
    if prototypes is not None and label_key is None:
        raise CellamaInputError("prototype guidance needs the reference's cell-type column (--label-key)")
    out_path = _prepare_out(out, overwrite)
    device = resolve_device(device)
    log = log if log is not None else FinetuneLog()
    rng = np.random.default_rng(seed)

    # ---- data
    if label_key is not None:
        labelled = reference.obs[label_key].notna().to_numpy()
        if not labelled.all():
            reference = reference[labelled].copy()
    yield (STAGE_PAIRS, 0, 4)
    x, gene_names = _restrict_genes(reference, genes)
    check_matrix(x, "reference")
    pca, pca_info = pca_coordinates(reference, n_hvg, n_pcs, seed)
    yield (STAGE_PAIRS, 1, 4)
    sentence_meta = metadata if append_metadata else None
    sentences = {k: cell_sentences(x, gene_names, k, reference.obs, sentence_meta) for k in top_ks}
    views = {k: [sentences[k]] for k in top_ks}
    if augment_views:
        aug_rng = np.random.default_rng([seed, 1])
        is_counts = is_integer_valued(x)
        for _ in range(augment_views):
            xd = downsample(x, augment_keep, aug_rng, is_counts)
            for k in top_ks:
                views[k].append(cell_sentences(xd, gene_names, k, reference.obs, sentence_meta))
    yield (STAGE_PAIRS, 2, 4)
    match_cols = list(dict.fromkeys(([label_key] if label_key else []) + list(metadata)))
    groups = _group_codes(reference.obs, match_cols)
    labels = reference.obs[label_key].astype(str).to_numpy() if label_key else None
    train_cells, val_cells = _split_cells(reference.n_obs, labels, validation_fraction, seed)
    n_val_pairs = round(n_pairs * validation_fraction / (1 - validation_fraction)) if len(val_cells) else 0
    view_rng = np.random.default_rng([seed, 2])
    train = _cell_pairset(pca, train_cells, n_pairs, neighbor_fraction, n_neighbors, groups, views, top_ks, rng,
                          view_rng)
    own = {k: v[:1] for k, v in views.items()}  # validation: the cells' own sentences
    val = (_cell_pairset(pca, val_cells, max(n_val_pairs, 10), neighbor_fraction, n_neighbors, groups, own,
                         top_ks, rng) if len(val_cells) >= 2 else None)

    # ---- prototypes
    marker_set = None
    proto_map: dict = {}
    proto_eval = None
    unmatched: list = []
    if prototypes is not None:
        markers = read_markers(prototypes) if not isinstance(prototypes, Mapping) else dict(prototypes)
        proto_map, unmatched = _match_prototypes(reference.obs[label_key], markers)
        if not proto_map:
            raise CellamaInputError(
                f"no label of {label_key!r} ({', '.join(map(str, unmatched[:8]))}) names a cell type of the marker "
                "table; rename the table's types to the reference labels"
            )
        marker_set = restrict_markers({t: markers[t] for t in dict.fromkeys(proto_map.values())}, gene_names)
        kept_types = list(marker_set.markers)
        proto_text_by_type = marker_sentences(marker_set.markers)
        type_pos = {t: i for i, t in enumerate(kept_types)}
        cell_type_index = np.array([type_pos.get(proto_map.get(lab, ""), -1) for lab in labels], dtype=np.int64)
        proto_text = [proto_text_by_type[t] for t in kept_types]
        n_proto = round(n_pairs * prototype_fraction)
        pp = _prototype_pairs(train_cells, cell_type_index, n_proto, views, top_ks, proto_text,
                              float(prototype_positive), float(prototype_negative), rng, view_rng)
        if pp is not None:
            train = PairSet.concat([train, pp])
        vc = val_cells[cell_type_index[val_cells] >= 0] if len(val_cells) else val_cells
        if len(vc):
            k0 = top_ks[0]
            proto_eval = ([sentences[k0][i] for i in vc], cell_type_index[vc], proto_text)
    train = train.shuffled(rng)
    yield (STAGE_PAIRS, 4, 4)

    # ---- model (a private copy: the cached model used by transfers is never modified)
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import CosineSimilarityLoss
    from sentence_transformers.util import batch_to_device
    from transformers import get_linear_schedule_with_warmup

    yield (STAGE_LOAD_MODEL, 0, 1)
    _, model_id = load_model(model, device, allow_download)
    torch.manual_seed(seed)
    st = SentenceTransformer(model_id, device=device, local_files_only=not allow_download)
    yield (STAGE_LOAD_MODEL, 1, 1)

    transfer_eval = None
    if labels is not None and len(val_cells):
        k0 = top_ks[0]
        sub = train_cells
        if len(sub) > MAX_TRANSFER_EVAL_CELLS:
            sub = np.sort(np.random.default_rng(seed).choice(train_cells, MAX_TRANSFER_EVAL_CELLS, replace=False))
        transfer_eval = ([sentences[k0][i] for i in val_cells], labels[val_cells],
                         [sentences[k0][i] for i in sub], labels[sub])
    eval_bs = max(batch_size, 32)
    before = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs, "before")
    history = [{"step": 0, **before}]
    select = bool(val is not None and len(val) and keep_best and eval_steps is not None)
    best_score = _finite(before.get("spearman")) if select else -np.inf
    best_step, best_state = 0, None

    loss_model = CosineSimilarityLoss(st).to(device)
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    named = list(loss_model.named_parameters())
    groups_opt = [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups_opt, lr=float(learning_rate))
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup_steps = round(warmup * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    log.total_steps, log.step, log.losses = total_steps, 0, []
    labels_t = torch.tensor(train.label, dtype=torch.float32)
    yield (STAGE_FINETUNE, 0, total_steps)
    for epoch in range(epochs):
        log.epoch = epoch + 1
        order = rng.permutation(len(train)) if epoch else np.arange(len(train))
        loss_model.train()
        for start in range(0, len(train), batch_size):
            idx = order[start:start + batch_size]
            fa = batch_to_device(st.preprocess([train.a[i] for i in idx]), device)
            fb = batch_to_device(st.preprocess([train.b[i] for i in idx]), device)
            loss = loss_model([fa, fb], labels_t[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(loss_model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            log.step += 1
            log.loss = float(loss.detach())
            log.losses.append(log.loss)
            log.learning_rate = float(scheduler.get_last_lr()[0])
            yield (STAGE_FINETUNE, log.step, total_steps)
            if eval_steps and (log.step % eval_steps == 0 or log.step == total_steps):
                scores = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs,
                                                   f"step {log.step}")
                history.append({"step": log.step, **scores})
                loss_model.train()
                if select and _finite(scores.get("spearman")) > best_score:
                    best_score, best_step = scores["spearman"], log.step
                    best_state = None if log.step == total_steps else {
                        k: v.detach().to("cpu", copy=True) for k, v in st.state_dict().items()}

    if select:
        if best_step == 0:  # training never beat the starting model on the held-out cells
            st = SentenceTransformer(model_id, device=device, local_files_only=not allow_download)
        elif best_state is not None:
            st.load_state_dict(best_state)
        best_state = None
    final_step = best_step if select else total_steps
    if eval_steps:  # the kept weights were evaluated already
        after = {k: v for k, v in next(h for h in history if h["step"] == final_step).items() if k != "step"}
    else:
        after = yield from _iter_validate(st, val, proto_eval, transfer_eval, eval_bs, "after")

    # ---- save (temporary folder, then rename)
    validation = {"n_cells": len(val_cells), "n_pairs": int(len(val) if val is not None else 0),
                  "kept_step": int(final_step), "history": history}
    for key, value in before.items():
        validation[f"{key}_before"] = value
    for key, value in after.items():
        validation[f"{key}_after"] = value
    params = {
        "base_model": model_id,
        "label_key": label_key,
        "metadata": list(metadata),
        "match_columns": match_cols,
        "top_k": top_ks,
        "n_pairs": n_pairs,
        "neighbor_fraction": neighbor_fraction,
        "n_neighbors": n_neighbors,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "warmup": warmup,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "eval_steps": eval_steps,
        "keep_best": bool(keep_best),
        "validation_fraction": validation_fraction,
        "augment_views": augment_views,
        "augment_keep": augment_keep if augment_views else None,
        "prototype_fraction": prototype_fraction if prototypes is not None else None,
        "prototype_positive": float(prototype_positive) if prototypes is not None else None,
        "prototype_negative": float(prototype_negative) if prototypes is not None else None,
        "n_genes_sentences": len(gene_names),
        "append_metadata": bool(append_metadata),
        "pca": pca_info,
        "seed": int(seed),
        "device": device,
        "n_reference_cells": int(reference.n_obs),
    }
    pair_counts = {"train": train.counts(), "validation": val.counts() if val is not None else {}}
    record = {"params": params, "validation": validation, "pair_counts": pair_counts,
              "prototypes": {"map": proto_map, "unmatched_labels": unmatched,
                             "marker_set": marker_set.to_dict() if marker_set else None},
              "losses": log.losses}
    yield (STAGE_SAVE_MODEL, 0, 1)
    def save(tmp):
        st.save(str(tmp), create_model_card=False)
        (tmp / FINETUNE_RECORD).write_text(json.dumps(record, indent=2, default=_json_default) + "\n")

    _prepare_out(out_path, overwrite)  # still ours to replace after training?
    write_dir(out_path, save, create=True)
    yield (STAGE_SAVE_MODEL, 1, 1)
    return FinetuneResult(out_path, validation, list(log.losses), params, pair_counts, marker_set, proto_map,
                          list(unmatched), time.perf_counter() - t_start)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def finetune(reference: ad.AnnData, out: str | os.PathLike, callback=None, **kwargs) -> FinetuneResult:
    """Fine-tune the sentence model on ``reference`` and write it to the folder ``out``.

    See the module docstring for the recipe and :func:`iter_finetune` for the
    parameters; ``callback(stage, done, total)`` receives progress.
    """
    return run(iter_finetune(reference, out, **kwargs), callback)


def read_finetune_record(path: str | os.PathLike) -> dict | None:
    """The ``cellama_finetune.json`` of a fine-tuned model folder (``None`` if absent)."""
    p = Path(path) / FINETUNE_RECORD
    return json.loads(p.read_text()) if p.exists() else None


__all__ = [
    "FINETUNE_RECORD",
    "FinetuneLog",
    "FinetuneResult",
    "PairSet",
    "finetune",
    "iter_finetune",
    "pair_labels",
    "pca_coordinates",
    "read_finetune_record",
    "sample_cell_pairs",
]
