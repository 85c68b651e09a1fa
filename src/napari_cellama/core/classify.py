"""Classifier heads for label transfer: logistic regression on the CELLama sentence
embeddings, logistic regression on the shared panel's expression, and their average.

Why a head and not only the kNN vote: a sentence keeps the order of a cell's top genes, not
their amounts, and small panels make few distinct sentences, so the nearest reference
sentence is often of another type; a linear head learns which embedding directions separate
the reference's types. The expression model sees the amounts the sentence drops. The
default (``method="ensemble"``) averages the probabilities of the embedding head (weight 0.4;
``C=100``, classes balanced) and of a logistic regression on expression (weight 0.6, ``C=1``);
the embedding head's weight falls for cells whose sentence names fewer than 3 genes
(:func:`embedding_weights`). On every setting of benchmarks 1-3 of
``benchmarks/quality_transfer.py`` (both panel seeds) it scores a higher macro-F1 than a
logistic regression on log-normalised expression and than the kNN (docs/quality.md, with what
did not help: per-dataset standardised expression, a geometric mean, concatenated features,
stronger embedding weights).

Expression for the classifier (:func:`expression_model_features`): counts normalised to 10,000
per cell over the shared genes and ``log1p``-transformed (:func:`log_normalise`; input that is
not integer-valued is taken as log-normalised already), beside ``log1p`` of the counts
themselves (:func:`log_counts`: the depth on the panel that normalisation drops). :func:`expression_features` additionally standardises each gene
within its dataset; the unknown score (:mod:`.unknown`) works in that space.

Everything is deterministic: ``lbfgs`` logistic regression with a fixed ``random_state``, fitted
with one BLAS thread (with several, the summation order - and for the weakly penalised
embedding head a few labels - depend on the thread count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._constants import (
    DEFAULT_BALANCED_CLASSES,
    DEFAULT_EXPRESSION_C,
    DEFAULT_EXPRESSION_WEIGHT,
    DEFAULT_HEAD_C,
    DEFAULT_RANDOM_STATE,
    DEFAULT_SENTENCE_FULL_GENES,
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


def log_counts(x) -> sp.csr_matrix:
    """Counts -> ``log1p`` of the counts themselves (no depth normalisation); other input as it is."""
    from .counts import is_raw_counts

    m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    if is_raw_counts(m):
        np.log1p(m.data, out=m.data)
    return m


def expression_model_features(x) -> sp.csr_matrix:
    """What the expression model of the ensemble sees: :func:`log_normalise` d values beside
    :func:`log_counts` (2 x genes columns).

    Normalising to 10,000 per cell keeps a cell's composition and drops its depth on the panel:
    a cell with one detected gene gets the same normalised vector whatever that gene's count. On
    a small panel, where most cells have 1-3 detected genes, the amounts are much of what there
    is to see (docs/quality.md: macro-F1 +0.01 to +0.04 on the 150- and 30-gene panels, level or
    better on the others)."""
    return sp.hstack([log_normalise(x), log_counts(x)], format="csr", dtype=np.float32)


def detected_genes(x) -> np.ndarray:
    """Per cell: how many genes have a count above zero (the genes its sentence can name)."""
    m = sp.csr_matrix(x)
    return np.asarray((m > 0).sum(axis=1)).ravel().astype(np.int64)


def embedding_weights(n_genes, weight: float, full: int = DEFAULT_SENTENCE_FULL_GENES) -> np.ndarray:
    """Per cell: the embedding head's weight in the ensemble, ``weight`` (the constant
    ``1 - expression_weight``) scaled by ``clip((n - 1) / (full - 1), 0, 1)`` for a sentence of
    ``n`` genes.

    A cell's sentence is a function of its counts on the panel, so it never holds more than the
    expression model sees; what the embedding head adds is what the language model knows about
    gene names *together* - their order and co-occurrence. A sentence of one gene names one gene
    (the expression model sees that gene, and its count), so the head gets no weight; it reaches
    its full weight at ``full`` genes (3). Measured (docs/quality.md): the embedding head is
    behind the expression model on cells with 1-2 detected genes on every small panel and ahead
    from about 5 genes."""
    n = np.asarray(n_genes, dtype=np.float64)
    return float(weight) * np.clip((n - 1.0) / max(float(full) - 1.0, 1.0), 0.0, 1.0)


def standardise(x) -> np.ndarray:
    """Each gene z-scored over the cells of ``x`` (float32, clipped at +-10; constant genes 0)."""
    d = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    d = d.astype(np.float32, copy=False)
    mean = d.mean(axis=0)
    sd = d.std(axis=0)
    sd[sd == 0] = 1.0
    return np.clip((d - mean) / sd, -_CLIP, _CLIP)


def expression_features(x) -> np.ndarray:
    """The unknown score's expression space: log-normalised, standardised within the dataset."""
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
    """The expression model: on :func:`expression_model_features` when the reference held counts
    (``uses_counts``), else on log-normalised values."""
    expression_weight: float
    uses_counts: bool = False
    fallback: tuple | None = field(default=None, repr=False)
    """``(log-normalised reference, labels, C, seed)``: fits, when first needed, the model on
    log-normalised values alone for a query that holds no counts (``uses_counts`` only)."""
    full_genes: int = DEFAULT_SENTENCE_FULL_GENES
    """Sentence length (genes) from which the embedding head has its full weight (:meth:`combine`)."""

    def embedding_proba(self, embeddings) -> np.ndarray:
        return self.embedding_head.predict_proba(_unit(embeddings))

    def expression_proba(self, counts) -> np.ndarray:
        """The expression model's probabilities for cells' shared-panel ``counts``: on
        :func:`expression_model_features` when both the reference and ``counts`` hold counts,
        else on log-normalised values (input that holds no counts is taken as log-normalised)."""
        from .counts import is_raw_counts

        if not self.uses_counts:
            return self.expression_head.predict_proba(log_normalise(counts))
        if is_raw_counts(counts):
            return self.expression_head.predict_proba(expression_model_features(counts))
        return self._normalised_head().predict_proba(log_normalise(counts))

    def _normalised_head(self):
        if getattr(self, "_normalised", None) is None:
            from threadpoolctl import threadpool_limits

            x, y, c, seed = self.fallback
            with threadpool_limits(1):
                self._normalised = _logreg(c, seed, False).fit(x, y)
        return self._normalised

    def combine(self, embedding_proba, expression_proba, n_genes=None) -> np.ndarray:
        """Weighted average of the heads' probabilities (either may be None).

        ``n_genes``: per cell, its detected genes on the panel (:func:`detected_genes`): the
        embedding head's weight then falls for sentences of fewer than 3 genes
        (``full_genes``, :func:`embedding_weights`); None: the constant weights (sentences that
        carry metadata)."""
        if expression_proba is None:
            return embedding_proba
        if embedding_proba is None:
            return expression_proba
        w_emb = 1.0 - self.expression_weight
        if n_genes is not None:
            w_emb = embedding_weights(n_genes, w_emb, self.full_genes)[:, None]
        return w_emb * embedding_proba + (1.0 - w_emb) * expression_proba

    def predict_proba(self, embeddings, counts=None, n_genes=None) -> np.ndarray:
        """``(n, n_categories)`` probabilities (``counts``: the cells' shared-panel counts)."""
        return self.combine(self.embedding_proba(embeddings),
                            None if self.expression_head is None else self.expression_proba(counts), n_genes)


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
    full_genes: int = DEFAULT_SENTENCE_FULL_GENES,
) -> HeadModel:
    """Fit the heads of ``method`` on reference cells: ``head`` - embeddings only; ``ensemble`` -
    embeddings and ``expression`` (the reference cells' counts on the shared panel, or their
    log-normalised values): a logistic regression on log-normalised values and, where
    ``expression`` holds counts, on :func:`expression_model_features` instead (the model on
    log-normalised values is then fitted only if a query without counts comes).

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

    from .counts import is_raw_counts

    # one BLAS thread: the weakly penalised fit then gives the same labels whatever the core count
    with threadpool_limits(1):
        emb_head = _logreg(c, seed, balanced).fit(_unit(embeddings), y)
        expr_head, counts, fallback = None, False, None
        if method == METHOD_ENSEMBLE:
            counts = is_raw_counts(expression)
            x = expression_model_features(expression) if counts else log_normalise(expression)
            expr_head = _logreg(expression_c, seed, False).fit(x, y)
            fallback = (log_normalise(expression), y, expression_c, seed) if counts else None
    return HeadModel(cats, emb_head, expr_head, float(expression_weight), counts, fallback, int(full_genes))
