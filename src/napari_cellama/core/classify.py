"""Classifier heads for label transfer: logistic regression on the CELLama sentence
embeddings, logistic regression on the shared panel's expression, and their average.

Why a head and not only the kNN vote: a sentence keeps the order of a cell's top genes, not
their amounts, and small panels make few distinct sentences, so the nearest reference
sentence is often of another type; a linear head learns which embedding directions separate
the reference's types. The expression model sees the amounts the sentence drops. The
default (``method="ensemble"``) averages the probabilities of the embedding head (weight 0.4;
``C=100``, classes balanced) and of a logistic regression on log-normalised expression
(weight 0.6, ``C=1``): on every benchmark of ``benchmarks/quality_transfer.py`` it scored a
higher macro-F1 than that logistic regression alone and than the kNN (docs/quality.md, with
what did not help: per-dataset standardised expression, a geometric mean, concatenated
features, stronger embedding weights).

Expression for the classifier: counts normalised to 10,000 per cell over the shared genes
and ``log1p``-transformed (:func:`log_normalise`; input that is not integer-valued is taken
as log-normalised already). :func:`expression_features` additionally standardises each gene
within its dataset; the unknown score (:mod:`.unknown`) works in that space.

Everything is deterministic: ``lbfgs`` logistic regression with a fixed ``random_state``, fitted
with one BLAS thread (with several, the summation order - and for the weakly penalised
embedding head a few labels - depend on the thread count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._constants import (
    DEFAULT_BALANCED_CLASSES,
    DEFAULT_EXPRESSION_C,
    DEFAULT_EXPRESSION_WEIGHT,
    DEFAULT_HEAD_C,
    DEFAULT_RANDOM_STATE,
    METHOD_ENSEMBLE,
    METHOD_HEAD,
)

_MAX_ITER = 2000
_CLIP = 10.0


def log_normalise(x) -> sp.csr_matrix:
    """Counts -> ``log1p`` of counts per 10,000 (over the given genes); other input as it is."""
    from .counts import is_raw_counts

    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    if not is_raw_counts(m):
        return m
    total = np.asarray(m.sum(axis=1)).ravel()
    scale = np.divide(1e4, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)
    m = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ m)
    np.log1p(m.data, out=m.data)
    return m


def standardise(x) -> np.ndarray:
    """Each gene z-scored over the cells of ``x`` (float32, clipped at +-10; constant genes 0)."""
    d = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    d = d.astype(np.float32, copy=False)
    mean = d.mean(axis=0)
    sd = d.std(axis=0)
    sd[sd == 0] = 1.0
    return np.clip((d - mean) / sd, -_CLIP, _CLIP)


def expression_features(x) -> np.ndarray:
    """What the expression model sees: log-normalised, standardised within the dataset."""
    return standardise(log_normalise(x))


def _logreg(c: float, seed: int, balanced: bool):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=_MAX_ITER, random_state=seed,
                              class_weight="balanced" if balanced else None)


@dataclass
class HeadModel:
    """Fitted heads; ``categories`` orders the probability columns."""

    categories: np.ndarray
    embedding_head: object | None
    expression_head: object | None
    expression_weight: float

    def embedding_proba(self, embeddings) -> np.ndarray:
        return self.embedding_head.predict_proba(_unit(embeddings))

    def expression_proba(self, expression) -> np.ndarray:
        return self.expression_head.predict_proba(expression)

    def combine(self, embedding_proba, expression_proba) -> np.ndarray:
        """Weighted average of the heads' probabilities (either may be None)."""
        if expression_proba is None:
            return embedding_proba
        if embedding_proba is None:
            return expression_proba
        w = self.expression_weight
        return (1.0 - w) * embedding_proba + w * expression_proba

    def predict_proba(self, embeddings, expression=None) -> np.ndarray:
        """``(n, n_categories)`` probabilities (``expression``: :func:`log_normalise` d counts)."""
        return self.combine(self.embedding_proba(embeddings),
                            None if self.expression_head is None else self.expression_proba(expression))


def _unit(x) -> np.ndarray:
    from .transfer import l2_normalise

    return l2_normalise(x)


def fit_heads(
    embeddings: np.ndarray,
    expression,
    labels,
    *,
    method: str = METHOD_ENSEMBLE,
    c: float = DEFAULT_HEAD_C,
    expression_c: float = DEFAULT_EXPRESSION_C,
    expression_weight: float = DEFAULT_EXPRESSION_WEIGHT,
    balanced: bool = DEFAULT_BALANCED_CLASSES,
    seed: int = DEFAULT_RANDOM_STATE,
) -> HeadModel:
    """Fit the heads of ``method`` on reference cells: ``head`` - embeddings only; ``ensemble`` -
    embeddings and ``expression`` (:func:`log_normalise` d counts of the shared panel).

    ``balanced`` weighs the embedding head's cells inversely to their type's size; the
    expression model is the plain logistic regression (balancing it lowered macro-F1 on the
    150-gene panel and across donors, docs/quality.md)."""
    y = np.asarray(labels).astype(str)
    cats = np.unique(y)
    if len(cats) < 2:
        from ..validators import CellamaInputError

        raise CellamaInputError(
            f"the reference has a single label ({cats[0] if len(cats) else 'none'}); a classifier needs "
            "at least two - use --method knn or a reference with several cell types"
        )
    if method not in (METHOD_ENSEMBLE, METHOD_HEAD):
        raise ValueError(f"unknown classifier method {method!r}")
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the weakly penalised fit then gives the same labels whatever the core count
    with threadpool_limits(1):
        emb_head = _logreg(c, seed, balanced).fit(_unit(embeddings), y)
        expr_head = _logreg(expression_c, seed, False).fit(expression, y) if method == METHOD_ENSEMBLE else None
    return HeadModel(cats, emb_head, expr_head, float(expression_weight))
