"""Check surrogate embeddings against the exact model, label by label, and re-embed where needed.

The surrogate (:mod:`napari_cellama.core.surrogate`) predicts embeddings with a small
error. Whether that error changes a cell's *label* depends on the label function
and on how clear-cut the cell is. :func:`iter_refine` works with any label function
given as ``score_fn(embeddings) -> (n, n_classes)`` class scores (the label is the
arg-max; :func:`knn_score_function` gives the distance-weighted kNN vote of
:mod:`napari_cellama.core.transfer`, the default classifier):

1. the held-out sentences (embedded exactly by the surrogate embedder, never used in
   fitting) are scored twice: with their surrogate vectors and with the exact ones;
   a held-out cell *disagrees* when the two labels differ;
2. every predicted cell gets its *margin* (top score minus second score under the
   surrogate vectors);
3. the smallest margin threshold ``t`` is chosen such that the estimated share of all
   cells whose label would still differ from exact - predicted cells with margin
   ``>= t``, at the upper 95% bound of the held-out rate of cells with margin ``>= t`` that
   disagree - is at most ``1 - target``;
4. the predicted cells with margin ``< t`` are embedded exactly.

The result's ``params`` record the numbers (:data:`CHECK_KEY`). When the estimate
cannot reach the target (``max_share`` caps the exact re-embedding), a
:class:`SurrogateAgreementWarning` says so and ``meets_target`` is ``False``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from .._constants import DEFAULT_N_NEIGHBORS, STAGE_SURROGATE_CHECK

CHECK_KEY = "surrogate_check"
"""Key of ``TransferResult.params`` holding the surrogate check's numbers."""


class SurrogateAgreementWarning(UserWarning):
    """The surrogate run cannot show the target agreement with the exact model."""


def knn_score_function(reference_embeddings: np.ndarray, reference_labels, k: int = DEFAULT_N_NEIGHBORS):
    """``score_fn(query) -> (n, n_classes)`` vote shares of the distance-weighted cosine kNN
    (the weights of :func:`napari_cellama.core.transfer.vote`)."""
    from .transfer import _EPS, cosine_knn

    labels = np.asarray(reference_labels, dtype=object)
    keep = pd.notna(labels)
    ref = np.asarray(reference_embeddings)[keep]
    cats, codes = np.unique(labels[keep].astype(str), return_inverse=True)

    def score(query: np.ndarray) -> np.ndarray:
        if len(query) == 0:
            return np.zeros((0, len(cats)))
        idx, sim = cosine_knn(query, ref, k=min(k, len(ref)))
        w = 1.0 / (np.clip(1.0 - sim.astype(np.float64), 0.0, 2.0) + _EPS)
        s = np.zeros((len(query), len(cats)))
        np.add.at(s, (np.repeat(np.arange(len(query)), idx.shape[1]), codes[idx].ravel()), w.ravel())
        return s / np.maximum(s.sum(axis=1, keepdims=True), 1e-12)

    return score


def margins(scores: np.ndarray) -> np.ndarray:
    """Top class score minus the second (the whole top score with a single class)."""
    if scores.shape[1] < 2:
        return scores.max(axis=1) if scores.shape[1] else np.zeros(len(scores))
    part = np.partition(scores, -2, axis=1)
    return part[:, -1] - part[:, -2]


_Z = 1.645
"""One-sided 95% Wilson bound for the held-out disagreement rate."""


def _upper_rate(d, n: int):
    """Upper 95% Wilson bound of a rate observed as ``d`` of ``n``."""
    d = np.asarray(d, dtype=np.float64)
    z2 = _Z * _Z
    return (d + z2 / 2 + _Z * np.sqrt(np.maximum(d * (1 - d / n), 0.0) + z2 / 4)) / (n + z2)


def choose_threshold(heldout_margin: np.ndarray, heldout_disagree: np.ndarray, predicted_share: float,
                     target: float) -> tuple[float, float]:
    """``(t, estimated_agreement)``: the smallest margin threshold whose estimated agreement over
    all cells is at least ``target`` (``inf`` when even re-embedding every predicted cell is needed).

    For a threshold ``t`` the accepted predicted cells are those with margin ``>= t``; their
    estimated share of disagreeing cells is ``predicted_share`` times the upper 95% Wilson bound
    of ``d(t) / n``, where ``d(t)`` counts held-out disagreements with margin ``>= t`` among the
    ``n`` held-out cells.
    """
    n = len(heldout_margin)
    if n == 0 or predicted_share == 0:
        return (-np.inf, 1.0) if predicted_share == 0 else (np.inf, 1.0)
    order = np.argsort(heldout_margin)
    m = heldout_margin[order]
    d = heldout_disagree[order].astype(np.int64)
    # disagreements among held-out cells with margin >= m[i] (suffix sums), for t = m[i]
    suffix = np.cumsum(d[::-1])[::-1]
    est = 1.0 - predicted_share * _upper_rate(suffix, n)
    ok = np.flatnonzero(est >= target)
    if len(ok) == 0:
        return np.inf, 1.0
    return float(m[ok[0]]), float(est[ok[0]])


def iter_refine(embedder, embeddings: np.ndarray, score_fn, *, target: float | None = None,
                max_share: float | None = None) -> Iterator:
    """Generator: re-embed exactly the predicted cells whose label is not robust (module docstring).

    ``embedder`` is the :class:`~napari_cellama.core.surrogate.SurrogateEmbedder` whose last
    :meth:`~napari_cellama.core.surrogate.SurrogateEmbedder.iter_encode` returned ``embeddings``
    (one row per sentence given). Returns the corrected embeddings; the numbers go to
    ``embedder.last_check`` (also returned in the result params by the pipeline).
    """
    t0 = time.perf_counter()
    last = embedder._last
    target = embedder.target if target is None else float(target)
    max_share = getattr(embedder, "max_exact_share", 1.0) if max_share is None else float(max_share)
    check = dict(embedder.last_check or {})
    check.update(target=target, label_function=getattr(score_fn, "__qualname__", str(score_fn)))
    if last is None or not last["predicted"].any():
        check.update(predicted=0, reembedded=0, share_reembedded=0.0, estimated_agreement=1.0, meets_target=True)
        embedder.last_check = check
        return embeddings
    codes, uniques, predicted, heldout = last["codes"], last["uniques"], last["predicted"], last["heldout"]
    first = np.unique(codes, return_index=True)[1]
    emb = np.array(embeddings[first], dtype=np.float32)
    weight = np.bincount(codes, minlength=len(uniques)).astype(np.float64)
    total_w = weight.sum()
    yield (STAGE_SURROGATE_CHECK, 0, 2)
    scores = score_fn(emb)
    margin = margins(scores)
    disagree = np.zeros(len(heldout), dtype=bool)
    if len(heldout):
        sur_h = score_fn(last["heldout_surrogate"])
        disagree = sur_h.argmax(axis=1) != scores[heldout].argmax(axis=1)  # emb[heldout] is exact
        hm = margins(sur_h)
    else:
        hm = np.zeros(0)
    yield (STAGE_SURROGATE_CHECK, 1, 2)
    share = float(weight[predicted].sum() / total_w)
    t, est = choose_threshold(hm, disagree, share, target)
    redo = np.flatnonzero(predicted & (margin < t))
    cap = int(np.floor(max_share * predicted.sum()))
    capped = len(redo) > cap
    if capped:  # keep the least robust cells
        redo = redo[np.argsort(margin[redo], kind="stable")[:cap]]
        kept = predicted.copy()
        kept[redo] = False
        est = 1.0 - float(weight[kept].sum() / total_w) * float(_upper_rate(disagree.sum(), max(len(heldout), 1)))
    if len(redo):
        emb[redo] = yield from embedder.base.iter_encode([uniques[i] for i in redo], STAGE_SURROGATE_CHECK)
    remaining = predicted.copy()
    remaining[redo] = False
    if not remaining.any():  # every predicted cell was re-embedded: the labels are exact
        est = 1.0
    meets = bool(est >= target and (len(heldout) > 0 or not remaining.any()))
    check.update(
        predicted=int(predicted.sum()),
        heldout_label_agreement=round(float(1.0 - disagree.mean()), 5) if len(heldout) else None,
        margin_threshold=None if not np.isfinite(t) else round(float(t), 6),
        reembedded=len(redo),
        share_reembedded=round(float(len(redo) / len(uniques)), 5),
        share_cells_reembedded=round(float(weight[redo].sum() / total_w), 5),
        share_cells_surrogate=round(float((weight[predicted].sum() - weight[redo].sum()) / total_w), 5),
        estimated_agreement=round(float(est), 5),
        meets_target=meets,
        seconds=round(time.perf_counter() - t0, 3),
    )
    embedder.last_check = check
    if not meets:
        warnings.warn(
            f"surrogate embeddings: estimated label agreement with the exact model {est:.1%} is below the "
            f"target {target:.0%} (held-out check of {len(heldout)} sentences, {len(redo)} re-embedded "
            f"exactly); use the exact model (mode onnx or exact) for labels you can rely on",
            SurrogateAgreementWarning, stacklevel=2)
    yield (STAGE_SURROGATE_CHECK, 2, 2)
    return emb[codes]


__all__ = ["CHECK_KEY", "SurrogateAgreementWarning", "choose_threshold", "iter_refine", "knn_score_function",
           "margins"]
