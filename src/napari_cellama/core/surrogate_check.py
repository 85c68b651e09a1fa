"""Check surrogate embeddings against the exact model, label by label, and re-embed where needed.

The surrogate (:mod:`napari_cellama.core.surrogate`) predicts embeddings with a small
error. Whether that error changes a cell's *label* depends on the label function and on
how clear-cut the cell is, so the check uses the label function of the transfer method
actually run (:mod:`napari_cellama.core.surrogate_label`: the ensemble's / head's final
``cell_type`` including the Unknown call and the thresholds, or the kNN vote); a plain
``score_fn(embeddings) -> (n, n_classes)`` class-score function also works (label: arg-max).
:func:`iter_refine` works per *cell* (cells sharing a sentence share its vector but differ
in expression):

1. the cells of the held-out sentences (embedded exactly by the surrogate embedder, never
   used in fitting) are labelled twice: from their surrogate and from their exact vectors;
   a held-out cell *disagrees* when the two final labels differ;
2. every cell gets its robustness components (distance of each decision to its boundary:
   probability margin, unknown score to ``1 - alpha``, ...), each divided by its typical
   surrogate error (the 90th percentile of the held-out cells' change between surrogate and
   exact vectors); the cell's *robustness* is the smallest of these;
3. the smallest robustness threshold ``t`` is chosen such that the estimated share of all
   cells whose label would still differ from exact - predicted cells with robustness
   ``>= t``, at the upper 95% Wilson bound of the held-out rate of cells with robustness
   ``>= t`` that disagree - is at most ``1 - target``;
4. the sentences of predicted cells with robustness ``< t`` are embedded exactly (a sentence
   is as fragile as its least robust cell).

The result's ``params`` record the numbers (:data:`CHECK_KEY`). When the estimate
cannot reach the target (``max_share`` caps the exact re-embedding), a :class:`SurrogateAgreementWarning` says so and ``meets_target`` is ``False``.
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
                     target: float, *, effective_n: float | None = None) -> tuple[float, float]:
    """``(t, estimated_agreement)``: the smallest margin threshold whose estimated agreement over
    all cells is at least ``target`` (``inf`` when even re-embedding every predicted cell is needed).

    For a threshold ``t`` the accepted predicted cells are those with margin ``>= t``; their
    estimated share of disagreeing cells is ``predicted_share`` times the upper 95% Wilson bound
    of ``d(t) / n``, where ``d(t)`` counts held-out disagreements with margin ``>= t`` among the
    ``n`` held-out cells. ``effective_n``: the held-out cells' effective sample size when they
    are not independent (cells sharing a held-out sentence, see :func:`effective_size`); the
    bound is then taken at that size with the same observed rate.
    """
    n = len(heldout_margin)
    if n == 0 or predicted_share == 0:
        return (-np.inf, 1.0) if predicted_share == 0 else (np.inf, 1.0)
    order = np.argsort(heldout_margin)
    m = heldout_margin[order]
    d = heldout_disagree[order].astype(np.int64)
    # disagreements among held-out cells with margin >= m[i] (suffix sums), for t = m[i]
    suffix = np.cumsum(d[::-1])[::-1]
    f = 1.0 if effective_n is None else min(float(effective_n), n) / n
    est = 1.0 - predicted_share * _upper_rate(suffix * f, n * f)
    ok = np.flatnonzero(est >= target)
    if len(ok) == 0:
        return np.inf, 1.0
    return float(m[ok[0]]), float(est[ok[0]])


def effective_size(cells_per_sentence: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of held-out cells drawn as whole
    sentences of ``w`` cells each (all cells of a sentence share its vector and mostly its label)."""
    w = np.asarray(cells_per_sentence, dtype=np.float64)
    return float(w.sum() ** 2 / max((w * w).sum(), 1e-12)) if len(w) else 0.0


class _ScoreLabels:
    """A plain ``score_fn(embeddings) -> class scores`` as a label function (arg-max, margin)."""

    def __init__(self, score_fn, codes):
        self.score_fn, self.codes = score_fn, np.asarray(codes)
        self.components = ("score margin",)

    def label(self, vectors, cells, inv):
        s = self.score_fn(vectors)
        best = s.argmax(axis=1) if len(s) else np.zeros(0, dtype=np.int64)
        return best[inv], margins(s)[inv][:, None]


_CHUNK_CELLS = 131072
_SCALE_QUANTILE = 0.9


def _label_all(fn, emb: np.ndarray, n_cells: int):
    """Labels and robustness components of every cell, in chunks (bounded memory)."""
    labels, comps = [], []
    for start in range(0, n_cells, _CHUNK_CELLS):
        cells = np.arange(start, min(start + _CHUNK_CELLS, n_cells))
        rows, inv = np.unique(fn.codes[cells], return_inverse=True)
        # every sentence (a run of fewer cells than a chunk): the rows themselves, no copy
        lab, comp = fn.label(emb if len(rows) == len(emb) else emb[rows], cells, inv)
        labels.append(np.asarray(lab, dtype=object))
        comps.append(np.asarray(comp, dtype=np.float64))
    if not labels:
        return np.zeros(0, dtype=object), np.zeros((0, 1))
    return np.concatenate(labels), np.concatenate(comps)


def robustness(components: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per cell: the smallest robustness component in units of its typical surrogate error."""
    if components.shape[1] == 0:
        return np.full(len(components), np.inf)
    return (components / scales).min(axis=1)


def iter_refine(embedder, embeddings: np.ndarray, label_fn, *, target: float | None = None,
                max_share: float | None = None, per_sentence: bool = False, on_labels=None) -> Iterator:
    """Generator: re-embed exactly the predicted cells whose label is not robust (module docstring).

    ``embedder`` is the :class:`~napari_cellama.core.surrogate.SurrogateEmbedder` whose last
    :meth:`~napari_cellama.core.surrogate.SurrogateEmbedder.iter_encode` returned ``embeddings``
    (one row per sentence given, i.e. per cell). ``per_sentence``: ``embeddings`` hold (and the
    result holds) one row per *distinct* sentence instead, ``rows[codes]`` being the per-cell ones
    (``codes``: the sentences' :func:`pandas.factorize` codes; a million cells then need no
    per-cell copy of the vectors; a writeable float32 C-ordered ``embeddings`` is then corrected
    in place and returned). ``on_labels(labels)``: called with every cell's label from the
    surrogate vectors (the label function's, before any re-embedding); when it returns True (it
    published them, :mod:`.provisional`) the generator yields ``(STAGE_PROVISIONAL, n, n)``. ``label_fn`` is a label function of
    :mod:`.surrogate_label` (the transfer method's final labels; its ``codes`` must be the
    cells' distinct-sentence codes of that call) or a plain ``score_fn(embeddings) -> class
    scores`` (label: the arg-max). Returns the corrected embeddings; the numbers go to
    ``embedder.last_check`` (also returned in the result params by the pipeline).
    """
    t0 = time.perf_counter()
    last = embedder._last
    target = embedder.target if target is None else float(target)
    max_share = getattr(embedder, "max_exact_share", 1.0) if max_share is None else float(max_share)
    check = dict(embedder.last_check or {})
    name = getattr(label_fn, "__qualname__", None) or type(label_fn).__name__
    # the threshold aims above the target by the embedder's margin (the leave-one-out check's,
    # see SurrogateEmbedder); the run meets the target when its estimate reaches the target
    margin = float(getattr(embedder, "check_margin", 0.0))
    aim = min(target + margin, 1.0)
    check.update(target=target, check_margin=margin, label_function=name)
    if last is None or not last["predicted"].any():
        check.update(predicted=0, reembedded=0, share_reembedded=0.0, estimated_agreement=1.0, meets_target=True)
        embedder.last_check = check
        return embeddings
    codes, uniques, predicted, heldout = last["codes"], last["uniques"], last["predicted"], last["heldout"]
    if not hasattr(label_fn, "label"):
        label_fn = _ScoreLabels(label_fn, codes)
    elif len(label_fn.codes) != len(codes) or not np.array_equal(label_fn.codes, codes):
        raise ValueError("the label function's sentence codes are not those of the last iter_encode call")
    check["components"] = list(getattr(label_fn, "components", ()))
    if per_sentence:
        if len(embeddings) != len(uniques):
            raise ValueError(f"per_sentence: expected one row per distinct sentence ({len(uniques)}), "
                             f"got {len(embeddings)}")
        # corrected in place (a float32 C-ordered input is the result): no second copy of the rows
        emb = np.require(embeddings, dtype=np.float32, requirements=("C", "W"))
    else:
        emb = np.array(embeddings[np.unique(codes, return_index=True)[1]], dtype=np.float32)
    n_cells = len(codes)
    yield (STAGE_SURROGATE_CHECK, 0, 3)
    early, comp = _label_all(label_fn, emb, n_cells)
    if on_labels is not None and on_labels(early):
        from .._constants import STAGE_PROVISIONAL

        yield (STAGE_PROVISIONAL, n_cells, n_cells)
    del early
    # each predicted sentence's expected error size (1 for exact vectors): robustness is relative to it
    unc = last.get("uncertainty")
    if unc is not None:
        comp = comp / unc[codes][:, None]
    yield (STAGE_SURROGATE_CHECK, 1, 3)
    # held-out cells: labels from exact (emb[heldout] is exact) and from surrogate vectors
    hcells = np.flatnonzero(np.isin(codes, heldout)) if len(heldout) else np.zeros(0, dtype=np.int64)
    scales = np.ones(comp.shape[1])
    if len(hcells):
        inv = np.searchsorted(heldout, codes[hcells])
        lab_x, comp_x = label_fn.label(emb[heldout], hcells, inv)
        lab_s, comp_s = label_fn.label(last["heldout_surrogate"], hcells, inv)
        disagree = np.asarray(lab_x, dtype=object) != np.asarray(lab_s, dtype=object)
        comp_s = np.asarray(comp_s, dtype=np.float64)
        delta = np.abs(comp_s - np.asarray(comp_x, dtype=np.float64))
        h_unc = last.get("heldout_uncertainty")
        if h_unc is not None and len(h_unc) == len(heldout):
            comp_s, delta = comp_s / h_unc[inv][:, None], delta / h_unc[inv][:, None]
        scales = np.maximum(np.quantile(delta, _SCALE_QUANTILE, axis=0), 1e-9)
        hm = robustness(comp_s, scales)
    else:
        disagree, hm = np.zeros(0, dtype=bool), np.zeros(0)
    r = robustness(comp, scales)
    cell_pred = predicted[codes]
    share = float(cell_pred.mean())
    n_eff = effective_size(np.bincount(codes[hcells])[heldout]) if len(hcells) else 0.0
    t, est = choose_threshold(hm, disagree, share, aim, effective_n=n_eff)
    if not np.isfinite(t) and aim > target:  # the margin is out of reach (e.g. a target near 1)
        t, est = choose_threshold(hm, disagree, share, target, effective_n=n_eff)
    fragile = cell_pred & (r < t)
    redo = np.unique(codes[fragile])
    # a sentence's robustness is that of its least robust cell
    sent_r = np.full(len(uniques), np.inf)
    np.minimum.at(sent_r, codes, r)
    cap = int(np.floor(max_share * predicted.sum()))
    capped = len(redo) > cap
    if capped:  # keep the least robust sentences
        redo = redo[np.argsort(sent_r[redo], kind="stable")[:cap]]
        kept = predicted.copy()
        kept[redo] = False
        f = min(n_eff, len(hcells)) / max(len(hcells), 1)
        est = 1.0 - float(kept[codes].mean()) * float(_upper_rate(disagree.sum() * f, max(len(hcells), 1) * f))
    yield (STAGE_SURROGATE_CHECK, 2, 3)
    if len(redo):
        emb[redo] = yield from embedder.base.iter_encode([uniques[i] for i in redo], STAGE_SURROGATE_CHECK)
    remaining = predicted.copy()
    remaining[redo] = False
    if not remaining.any():  # every predicted cell was re-embedded: the labels are exact
        est = 1.0
    meets = bool(est >= target and (len(hcells) > 0 or not remaining.any()))
    weight_redo = np.isin(codes, redo).mean() if len(redo) else 0.0
    check.update(
        predicted=int(predicted.sum()),
        heldout_cells=int(len(hcells)),
        heldout_effective_cells=round(float(n_eff), 1),
        heldout_label_agreement=round(float(1.0 - disagree.mean()), 5) if len(hcells) else None,
        component_scales=[round(float(x), 6) for x in scales],
        robustness_threshold=None if not np.isfinite(t) else round(float(t), 6),
        reembedded=len(redo),
        share_reembedded=round(float(len(redo) / len(uniques)), 5),
        share_cells_reembedded=round(float(weight_redo), 5),
        share_cells_surrogate=round(float(remaining[codes].mean()), 5),
        estimated_agreement=round(float(est), 5),
        meets_target=meets,
        seconds=round(time.perf_counter() - t0, 3),
    )
    embedder.last_check = check
    if not meets:
        warnings.warn(
            f"surrogate embeddings: estimated label agreement with the exact model {est:.1%} is below the "
            f"target {target:.0%} (held-out check of {len(hcells)} cells, {len(redo)} sentences re-embedded "
            f"exactly); use the exact model (mode onnx or exact) for labels you can rely on",
            SurrogateAgreementWarning, stacklevel=2)
    yield (STAGE_SURROGATE_CHECK, 3, 3)
    return emb if per_sentence else emb[codes]


__all__ = ["CHECK_KEY", "SurrogateAgreementWarning", "choose_threshold", "effective_size", "iter_refine",
           "knn_score_function", "margins", "robustness"]
