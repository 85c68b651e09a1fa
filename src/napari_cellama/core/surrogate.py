"""Surrogate embedding mode: a fast learned map from sentence to embedding, checked against the model.

A cell sentence is an ordered list of at most ``top_k`` gene symbols from a fixed
panel, so its embedding is a smooth function of few discrete inputs. The
:class:`SurrogateModel` learns that function per model and vocabulary from exact
embeddings of a sample of the run's own sentences:

features
    the sentence's words (split at white space and commas; the final period dropped)
    as one-hot *word x position* (positions 0-23, later ones share the last slot),
    *word* with a smooth rank weight ``1 / (1 + 0.15 p)``, *word is last*, and the
    number of words; each row scaled to unit length.
map
    kernel ridge regression with the degree-2 polynomial kernel ``(x.x' + 1)^2``
    (every pairwise word-position interaction, without writing them out), ridge
    ``0.1``, fitted to the exact unit vectors; predictions are L2-normalised.

:class:`SurrogateEmbedder` wraps an exact embedder (any mode of
:class:`~napari_cellama.core.embed.Embedder`, a Dask
:class:`~napari_cellama.core.distributed.DistributedEmbedder`, any device). For one
:meth:`~SurrogateEmbedder.iter_encode` call it

1. reads what the persistent cache already holds (exact vectors of the base mode);
2. embeds the rest exactly when there are at most ``exact_below`` of them;
3. otherwise embeds a random ``n_fit + n_check`` of them exactly, fits the map on the
   ``n_fit`` plus every exact vector it has seen in this session (e.g. the
   reference), measures it on the ``n_check`` held-out sentences (cosine), and
   predicts the others (``heldout="loo"``: fits all ``n_fit + n_check`` and holds each out
   by *leave-one-out*, in closed form - not the default, see the class). Sentences with a
   word never seen in fitting, and sentences shared by at least ``FREQUENT_CELLS`` cells,
   are embedded exactly.

The exact vectors go to the cache as usual; predictions never do. Whether the
predictions are good enough for *labels* is decided by
:mod:`napari_cellama.core.surrogate_check` (exact re-embedding where the label is not
robust), which the transfer pipeline runs for this mode.

Measured on the bone-marrow section with the pbmc3k reference (docs/performance.md):
mean cosine ~0.988 to the exact vectors; the kNN labels of predicted sentences agree
with exact for ~85% of them, so the check re-embeds a large share in that near-tie
setting.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import EMBED_MODE_SURROGATE, STAGE_EMBED, STAGE_SURROGATE_FIT
from ..validators import CellamaInputError
from .cache import sentence_keys

SURROGATE_VARIANT = "krr-poly2-wordpos-v1"
"""Identifies the features and map (recorded with the results)."""

DEFAULT_SURROGATE_FIT = 3000
"""Distinct sentences of a run embedded exactly to fit the surrogate (besides those seen before)."""

DEFAULT_SURROGATE_CHECK = 1000
"""Distinct sentences of a run embedded exactly to check the surrogate (held out from fitting)."""

DEFAULT_EXACT_BELOW = 5000
"""Runs with at most this many sentences to embed are embedded exactly (fitting would cost as much)."""

MAX_FIT_SENTENCES = 7000
"""At most this many exact vectors enter one fit (the kernel matrix is n x n float64)."""

_POSITIONS = 24
_RANK_DECAY = 0.15
_RIDGE = 0.1
_POLY_C = 1.0
_PREDICT_CHUNK = 4096
_WORDS = re.compile(r"[^\s,]+")


def sentence_words(sentence: str) -> list[str]:
    """Words of a sentence: split at white space and commas, final period dropped."""
    words = _WORDS.findall(sentence)
    if words and len(words[-1]) > 1 and words[-1].endswith("."):
        words[-1] = words[-1][:-1]
    return words


FREQUENT_CELLS = 5
"""Sentences shared by at least this many cells are embedded exactly (at most ``MAX_FREQUENT``, the
most shared first): one exact vector fixes many cells, and the check's held-out sample then
holds no sentence that stands for thousands of cells."""

MAX_FREQUENT = 3000


def _frequent(missing: np.ndarray, counts: np.ndarray) -> np.ndarray:
    c = counts[missing]
    rows = missing[c >= FREQUENT_CELLS]
    if len(rows) > MAX_FREQUENT:
        rows = rows[np.argsort(-counts[rows], kind="stable")[:MAX_FREQUENT]]
    return np.sort(rows)


class SurrogateModel:
    """Kernel ridge map from sentence words to unit embedding vectors (see module docstring)."""

    def __init__(self, ridge: float = _RIDGE):
        self.ridge = float(ridge)
        self.vocab: dict[str, int] = {}
        self._train: np.ndarray | None = None
        self._alpha: np.ndarray | None = None
        self.loo_vectors: np.ndarray | None = None
        self.loo_norm: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self._alpha is not None

    def features(self, sentences: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Row-normalised sparse features and a mask of sentences with a word outside the vocabulary."""
        v, p = len(self.vocab), _POSITIONS
        n_feat = v * p + 2 * v + p + 1
        rows, cols, vals = [], [], []
        unknown = np.zeros(len(sentences), dtype=bool)
        get = self.vocab.get
        for i, s in enumerate(sentences):
            words = sentence_words(s)
            last = len(words) - 1
            for pos, w in enumerate(words):
                j = get(w)
                if j is None:
                    unknown[i] = True
                    continue
                rows += (i, i)
                cols += (j * p + min(pos, p - 1), v * p + j)
                vals += (1.0, 1.0 / (1.0 + _RANK_DECAY * pos))
                if pos == last:
                    rows.append(i)
                    cols.append(v * p + v + j)
                    vals.append(1.0)
            rows.append(i)
            cols.append(v * p + 2 * v + min(len(words), p))
            vals.append(1.0)
        x = sp.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(len(sentences), n_feat))
        norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.maximum(norm, 1e-12)) @ x, unknown

    def _kernel(self, a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
        """``(a.b + c)^2`` for sparse rows ``a`` and dense transposed features ``b`` (features, n)."""
        # every sentence shares words ("Top genes are"): the product is dense, so a sparse x dense
        # product is much cheaper than a sparse x sparse one (for the fit too: 0.5 s against 8 s
        # for 5,638 sentences, idle, once the dense side is built from CSR - docs/performance.md)
        k = np.asarray(a @ b)
        k += _POLY_C
        return np.square(k, out=k)

    def fit(self, sentences: Sequence[str], vectors: np.ndarray, *, loo: int = 0) -> SurrogateModel:
        """Fit to exact ``vectors`` (``(n, d)``) of ``sentences``.

        ``loo``: also compute the *leave-one-out* predictions of the first ``loo`` fitted
        sentences (:attr:`loo_vectors`, :attr:`loo_norm`): for each, the prediction of the map
        fitted to all the other sentences, from the closed form of kernel ridge regression
        (``y_i - alpha_i / [(K + ridge I)^-1]_ii``; one triangular inverse, no refits)."""
        if len(sentences) != len(vectors) or len(sentences) == 0:
            raise CellamaInputError(f"surrogate fit needs vectors for its sentences, got "
                                    f"{len(sentences)} sentences and {len(vectors)} vectors")
        self.vocab = {}
        for s in sentences:
            for w in sentence_words(s):
                self.vocab.setdefault(w, len(self.vocab))
        x, _ = self.features(sentences)
        xt = x.T.tocsr()  # (features, n): densified from CSR in ~0.1 s (from the CSC view: ~4 s)
        # the fit's kernel as sparse x dense: equal to the sparse x sparse product (whose result
        # is dense anyway: every sentence shares words), 0.5 s against 8 s for 5,638 sentences
        k = self._kernel(x, xt.toarray())
        k[np.diag_indices_from(k)] += self.ridge
        import scipy.linalg as sl

        y = np.asarray(vectors, dtype=np.float64)
        factor = sl.cho_factor(k, overwrite_a=True)
        alpha = sl.cho_solve(factor, y)
        self.loo_vectors = self.loo_norm = None
        if loo > 0:
            self.loo_vectors, self.loo_norm = _loo(factor, alpha, y, int(loo))
        self._alpha = alpha.astype(np.float32)
        self._train = xt.astype(np.float32).toarray()  # (features, n) dense, C order
        return self

    def predict(self, sentences: Sequence[str], *, return_norm: bool = False):
        """``(vectors, unknown)``: unit float32 predictions and the out-of-vocabulary mask;
        with ``return_norm`` also the predictions' lengths before normalisation (the targets
        are unit vectors, so a short prediction - one the kernel map shrank towards 0 - marks
        a sentence unlike the fitted ones: its error is larger, see :func:`error_scale`)."""
        if not self.fitted:
            raise RuntimeError("fit the surrogate first")
        out = np.empty((len(sentences), self._alpha.shape[1]), dtype=np.float32)
        unknown = np.zeros(len(sentences), dtype=bool)
        norm = np.zeros(len(sentences), dtype=np.float32)
        for start in range(0, len(sentences), _PREDICT_CHUNK):
            part = sentences[start : start + _PREDICT_CHUNK]
            x, unk = self.features(part)
            z = self._kernel(x.astype(np.float32), self._train) @ self._alpha
            n = np.linalg.norm(z, axis=1)
            z /= np.maximum(n, 1e-12)[:, None]
            out[start : start + len(part)] = z
            unknown[start : start + len(part)] = unk
            norm[start : start + len(part)] = n
        return (out, unknown, norm) if return_norm else (out, unknown)


def _loo(factor, alpha: np.ndarray, y: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictions of the first ``m`` fitted rows: unit float32 vectors and their
    lengths before normalisation. ``factor``: Cholesky factor of ``K + ridge I``; ``alpha``: its
    solution for the targets ``y``. With ``A = (K + ridge I)^-1`` the prediction for row ``i`` of
    the map fitted without it is ``y_i - alpha_i / A_ii``."""
    import scipy.linalg as sl

    c, lower = factor
    # A = L^-T L^-1 (lower L; upper: A = U^-1 U^-T), so A_ii is the squared norm of row / column i
    # of the triangular inverse
    inv, info = sl.lapack.dtrtri(c, lower=int(lower))
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular inverse failed (info {info})")
    inv = np.tril(inv) if lower else np.triu(inv)  # the other triangle holds what cho_factor left there
    a_ii = np.einsum("ij,ij->j", inv, inv) if lower else np.einsum("ij,ij->i", inv, inv)
    z = y[:m] - alpha[:m] / a_ii[:m, None]
    n = np.linalg.norm(z, axis=1)
    return (z / np.maximum(n, 1e-12)[:, None]).astype(np.float32), n.astype(np.float32)


_ERROR_FLOOR = 0.1


def error_scale(norm: np.ndarray) -> np.ndarray:
    """Relative size of a prediction's error from its length before normalisation:
    ``0.1 + max(0, 1 - norm)``. Measured on the bone-marrow section (3,000 fitted sentences plus
    the reference, 20,000 predicted): the mean error length ``|prediction - exact|`` rises from
    0.12 for norms near 1 to 0.27 for the shortest tenth (Spearman -0.65 between norm and
    error); the check divides each cell's robustness by this scale."""
    return _ERROR_FLOOR + np.maximum(0.0, 1.0 - np.asarray(norm, dtype=np.float64))


class SurrogateEmbedder:
    """Embedder of mode ``surrogate``: exact vectors where known or cheap, learned predictions elsewhere.

    Parameters
    ----------
    base
        the exact embedder (:class:`~napari_cellama.core.embed.Embedder` of any mode, or a
        :class:`~napari_cellama.core.distributed.DistributedEmbedder`); its cache holds the
        exact vectors.
    n_fit, n_check
        distinct sentences per run embedded exactly to fit and to check the surrogate.
    exact_below
        runs with at most this many sentences left to embed are embedded exactly.
    seed
        seed of the random samples.
    target
        label agreement with the exact model that :meth:`iter_refine` must reach.
    max_exact_share
        at most this share of the predicted sentences is re-embedded exactly by :meth:`iter_refine`.
    heldout
        ``"split"`` (default): ``n_check`` of the sampled sentences are held out of the fit and
        predicted by the fitted map; ``"loo"``: all ``n_fit + n_check`` are fitted, and the
        check's held-out predictions are their *leave-one-out* predictions (each from the map
        fitted to all the other sentences, :meth:`SurrogateModel.fit`). ``loo`` re-embeds far
        fewer sentences, but its agreement estimate was above the measured agreement in 2 of 5
        runs (1M cells: estimated 99.01 %, measured 98.96 % of 5,000), so it is not the default
        (docs/performance.md).

    Other attributes (``model_id``, ``device``, ``cache``, ``fingerprint``, ...) are the base's.
    After :meth:`iter_encode`, :attr:`last_stats` also holds ``predicted`` (sentences the
    surrogate computed) and ``check`` (cosine to exact on the held-out sentences).
    """

    mode = EMBED_MODE_SURROGATE

    def __init__(self, base, *, n_fit: int = DEFAULT_SURROGATE_FIT, n_check: int = DEFAULT_SURROGATE_CHECK,
                 exact_below: int = DEFAULT_EXACT_BELOW, seed: int = 0, target: float = 0.99,
                 max_exact_share: float = 1.0, heldout: str = "split"):
        if heldout not in ("loo", "split"):
            raise CellamaInputError(f"surrogate held-out scheme must be 'loo' or 'split', not {heldout!r}")
        self.heldout = heldout
        if getattr(base, "mode", None) == EMBED_MODE_SURROGATE:
            raise CellamaInputError("the base of a surrogate embedder must be an exact embedder")
        self.base = base
        self.n_fit = max(int(n_fit), 1)
        self.n_check = max(int(n_check), 0)
        self.exact_below = max(int(exact_below), self.n_fit + self.n_check)
        self.seed = int(seed)
        self.target = float(target)
        self.max_exact_share = float(max_exact_share)
        self.model_surrogate: SurrogateModel | None = None
        self._pool_sentences: list[str] = []
        self._pool_vectors: list[np.ndarray] = []
        self._last: dict | None = None
        self.last_stats: dict = {}
        self.last_check: dict | None = None

    def __getattr__(self, name):  # model_id, device, cache, fingerprint, dimension, load, close, ...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close = getattr(self.base, "close", None)
        if close is not None:
            close()

    @property
    def exact_mode(self) -> str:
        """Mode of the exact embedder whose vectors the surrogate learns."""
        return self.base.mode

    def describe(self) -> dict:
        info = dict(self.base.describe())
        info.update(mode=self.mode, exact_mode=self.exact_mode, surrogate=SURROGATE_VARIANT)
        return info

    def _remember(self, sentences: Sequence[str], vectors: np.ndarray) -> None:
        self._pool_sentences.extend(sentences)
        self._pool_vectors.append(np.asarray(vectors, dtype=np.float32))

    def _fit_set(self, sentences: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """This run's fit sample plus the session's earlier exact vectors, at most MAX_FIT_SENTENCES."""
        pool_s = list(self._pool_sentences)
        pool_v = np.concatenate(self._pool_vectors) if self._pool_vectors else np.zeros((0, vectors.shape[1]))
        if pool_s:  # a sentence fitted twice would make its leave-one-out prediction exact
            own = set(sentences)
            keep = [i for i, t in enumerate(pool_s) if t not in own]
            if len(keep) < len(pool_s):
                pool_s, pool_v = [pool_s[i] for i in keep], pool_v[keep]
        room = MAX_FIT_SENTENCES - len(sentences)
        if len(pool_s) > room:
            keep = np.random.default_rng(self.seed).choice(len(pool_s), max(room, 0), replace=False)
            pool_s, pool_v = [pool_s[i] for i in keep], pool_v[keep]
        return sentences + pool_s, np.concatenate([vectors, pool_v.astype(np.float32)])

    def iter_encode(self, sentences: Sequence[str], stage: str = STAGE_EMBED) -> Iterator:
        """Generator: yields ``(stage, done, total)``, returns ``(n, d)`` float32 (see class docstring)."""
        t0 = time.perf_counter()
        sentences = list(sentences)
        codes, uniques = pd.factorize(pd.Index(sentences, dtype=object))
        uniques = [str(s) for s in uniques]
        total = len(uniques)
        found = np.zeros(total, dtype=bool)
        vectors = None
        cache = getattr(self.base, "cache", None)
        if cache is not None and total:
            vectors, found = cache.lookup(self.base.cache_namespace, keys=sentence_keys(uniques))
        missing = np.flatnonzero(~found)
        predicted = np.zeros(total, dtype=bool)
        uncertainty = np.ones(total, dtype=np.float64)
        heldout = np.zeros(0, dtype=np.int64)
        check = None
        if len(missing) <= self.exact_below:
            exact_rows = missing
        else:
            frequent = _frequent(missing, np.bincount(codes, minlength=total))
            pool = np.setdiff1d(missing, frequent)
            rng = np.random.default_rng(self.seed)
            sample = rng.choice(pool, min(self.n_fit + self.n_check, len(pool)), replace=False)
            if self.heldout == "loo":  # every sampled sentence is fitted and held out by leave-one-out
                fit_rows = heldout = np.sort(sample)
            else:
                fit_rows, heldout = np.sort(sample[: self.n_fit]), np.sort(sample[self.n_fit :])
            exact_rows = np.concatenate([fit_rows, heldout, frequent])
        if len(exact_rows):
            new = yield from self.base.iter_encode([uniques[i] for i in exact_rows], stage)
            if vectors is None or vectors.shape[1] != new.shape[1]:
                vectors = np.zeros((total, new.shape[1]), dtype=np.float32)
            vectors[exact_rows] = new
        if vectors is None:
            vectors = np.zeros((0, self.base.dimension), dtype=np.float32)
        if len(missing) > self.exact_below:
            yield (STAGE_SURROGATE_FIT, 0, 1)
            fit_s, fit_v = self._fit_set([uniques[i] for i in fit_rows], vectors[fit_rows])
            loo = len(fit_rows) if self.heldout == "loo" else 0
            self.model_surrogate = SurrogateModel().fit(fit_s, fit_v, loo=loo)
            yield (STAGE_SURROGATE_FIT, 1, 1)
            rest = np.setdiff1d(missing, exact_rows)
            pred, unknown, norm = self.model_surrogate.predict([uniques[i] for i in rest], return_norm=True)
            vectors[rest] = pred
            uncertainty[rest] = error_scale(norm)
            predicted[rest[~unknown]] = True
            if unknown.any():  # words the surrogate never saw: embed those exactly
                rows = rest[unknown]
                vectors[rows] = yield from self.base.iter_encode([uniques[i] for i in rows], stage)
            check = self._heldout_check([uniques[i] for i in heldout], vectors[heldout])
            check["heldout"] = self.heldout
            check["n_fit"] = len(fit_s)
            check["unknown_words_exact"] = int(unknown.sum())
            check["frequent_exact"] = int(len(frequent))
        exact_now = np.flatnonzero(~predicted & ~found)
        self._remember([uniques[i] for i in exact_now], vectors[exact_now])
        self._last = {"codes": codes, "uniques": uniques, "predicted": predicted, "heldout": heldout,
                      "heldout_surrogate": check.pop("_vectors") if check else None,
                      "uncertainty": uncertainty,
                      "heldout_uncertainty": check.pop("_uncertainty") if check else None}
        self.last_check = check
        self.last_stats = {
            "sentences": len(sentences),
            "unique": total,
            "cached": int(found.sum()),
            "embedded": int(total - found.sum() - predicted.sum()),
            "predicted": int(predicted.sum()),
            "check": None if check is None else {k: v for k, v in check.items()},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        yield (stage, total, total)
        return vectors[codes] if total else vectors

    def _heldout_check(self, sentences: list[str], exact: np.ndarray) -> dict:
        """Cosine of the surrogate's predictions to the exact vectors of held-out sentences."""
        if not sentences:
            return {"n_check": 0, "_vectors": np.zeros((0, exact.shape[1]), dtype=np.float32),
                    "_uncertainty": np.zeros(0)}
        model = self.model_surrogate
        if self.heldout == "loo":  # the first fitted sentences are these, in this order
            pred, norm = model.loo_vectors[: len(sentences)], model.loo_norm[: len(sentences)]
        else:
            pred, _, norm = model.predict(sentences, return_norm=True)
        cos = np.sum(pred * exact, axis=1)
        return {
            "n_check": len(sentences),
            "cosine_mean": round(float(cos.mean()), 5),
            "cosine_p1": round(float(np.percentile(cos, 1)), 5),
            "cosine_min": round(float(cos.min()), 5),
            "_vectors": pred,
            "_uncertainty": error_scale(norm),
        }

    def iter_encode_exact(self, sentences: Sequence[str], stage: str = STAGE_EMBED) -> Iterator:
        """Generator: embed with the exact embedder (the reference of a transfer); the vectors
        join the fit set of later :meth:`iter_encode` calls."""
        sentences = list(sentences)
        vectors = yield from self.base.iter_encode(sentences, stage)
        uniques, first = np.unique(np.asarray(sentences, dtype=object), return_index=True) if sentences else ([], [])
        self._remember([str(s) for s in uniques], vectors[first])
        self.last_stats = dict(getattr(self.base, "last_stats", {}), predicted=0)
        return vectors

    def encode(self, sentences: Sequence[str], callback=None) -> np.ndarray:
        """Embed sentences; ``callback(stage, done, total)`` receives progress."""
        from ._progress import run

        return run(self.iter_encode(sentences), callback)

    def iter_refine(self, embeddings: np.ndarray, score_fn, **kwargs) -> Iterator:
        """Exact re-embedding where the label is not robust; see
        :func:`napari_cellama.core.surrogate_check.iter_refine` (``embeddings``: the last
        :meth:`iter_encode` output)."""
        from .surrogate_check import iter_refine

        return iter_refine(self, embeddings, score_fn, **kwargs)


__all__ = ["DEFAULT_EXACT_BELOW", "DEFAULT_SURROGATE_CHECK", "DEFAULT_SURROGATE_FIT", "SURROGATE_VARIANT",
           "SurrogateEmbedder", "SurrogateModel", "error_scale", "sentence_words"]
