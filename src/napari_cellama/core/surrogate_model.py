"""The surrogate's map from a cell sentence to its embedding: kernel ridge regression on words.

features
    the sentence's words (split at white space and commas; the final period dropped)
    as one-hot *word x position* (positions 0-23, later ones share the last slot),
    *word* with a smooth rank weight ``3 / (1 + 0.05 p)``, *word is last*, and the
    number of words; each row scaled to unit length. (The word weight 3 and decay 0.05
    replaced 1 and 0.15: leave-one-out cosine to the exact vectors 0.9869 -> 0.992, 1st
    percentile 0.951 -> 0.97, on 4,000 of the bone-marrow section's sentences plus the
    pbmc3k reference, two samples; docs/performance.md.)
map
    kernel ridge regression with the degree-2 polynomial kernel ``(x.x' + 1)^2``
    (every pairwise word-position interaction, without writing them out), ridge
    ``0.1``, fitted to the exact unit vectors; predictions are L2-normalised.

:class:`SurrogateModel` is the map alone (fit, predict, leave-one-out predictions);
:class:`~napari_cellama.core.surrogate.SurrogateEmbedder` samples, fits, predicts and checks it
per run. The fit's large arrays are built block by block and factored in place: on this
project's VM, memory touched for the first time costs ~10 s per GB (docs/performance.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..validators import CellamaInputError

_POSITIONS = 24
_RANK_DECAY = 0.05
_BAG_WEIGHT = 3.0
_RIDGE = 0.1
_POLY_C = 1.0
_PREDICT_CHUNK = 2048  # sentences per kernel block: 2048 x 6,638 float32 = 54 MB
_FIT_BLOCK = 512
_FIT_DTYPE = np.float32
"""The fit's kernel, factor and solution. In float32 the section's fit (5,638 sentences) took
3.7 instead of 6.8 s on one core, half of it the first touch of the kernel's memory (127 instead
of 254 MB); its leave-one-out vectors have cosine >= 0.9999999 to those of a float64 fit and its
coefficients differ by 2.4e-4 (relative norm). The ridge (0.1 on a diagonal of 4) keeps the
smallest eigenvalue 70x above float32's rounding of a 7,000-sentence kernel; should the float32
factor still fail, the fit is redone in float64."""
_MIN_ROWS_PER_THREAD = 256
_WORDS = re.compile(r"[^\s,]+")


def sentence_words(sentence: str) -> list[str]:
    """Words of a sentence: split at white space and commas, final period dropped."""
    words = _WORDS.findall(sentence)
    if words and len(words[-1]) > 1 and words[-1].endswith("."):
        words[-1] = words[-1][:-1]
    return words


class SurrogateModel:
    """Kernel ridge map from sentence words to unit embedding vectors (see module docstring)."""

    def __init__(self, ridge: float = _RIDGE):
        self.ridge = float(ridge)
        self.vocab: dict[str, int] = {}
        self._train: np.ndarray | None = None
        self._cols: np.ndarray | None = None
        self._alpha: np.ndarray | None = None
        self.loo_vectors: np.ndarray | None = None
        self.loo_norm: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self._alpha is not None and self._train is not None and self._cols is not None

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
                vals += (1.0, _BAG_WEIGHT / (1.0 + _RANK_DECAY * pos))
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
        # product is much cheaper than a sparse x sparse one
        k = _sparse_dense(a, b)
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
        self._alpha = self._train = self._cols = self.loo_vectors = self.loo_norm = None
        # only the features some fitted sentence has enter the products (any other adds 0 to
        # every dot product): 7,479 of the section's 12,115, so 169 instead of 273 MB here
        cols = np.flatnonzero(x.getnnz(axis=0))
        x = x[:, cols]
        try:
            factor, alpha, y = self._factor_solve(x, vectors, _FIT_DTYPE)
        except np.linalg.LinAlgError:  # float32 rounding broke positive definiteness: once more in float64
            factor, alpha, y = self._factor_solve(x, vectors, np.float64)
        if loo > 0:
            self.loo_vectors, self.loo_norm = _loo(factor, alpha, y, int(loo))
        alpha = alpha.astype(np.float32, copy=False)
        del factor  # the kernel, factored in place: released before the training features take its place
        self._train = x.T.tocsr().astype(np.float32).toarray()  # (used features, n), C order
        self._cols, self._alpha = cols, alpha
        return self

    def _factor_solve(self, x: sp.csr_matrix, vectors: np.ndarray, dtype):
        """``(cholesky factor of K + ridge I, alpha, targets)`` in ``dtype``; the kernel is factored
        in place (the factor holds it)."""
        import scipy.linalg as sl

        k = self._fit_kernel(x, dtype)
        k[np.diag_indices_from(k)] += self.ridge
        y = np.asarray(vectors, dtype=dtype)
        # k is symmetric and C-ordered: its transpose is the same matrix in the Fortran order
        # LAPACK factors in place (given k, the wrapper would first copy it: 127 MB at 5,638)
        factor = sl.cho_factor(k.T, lower=False, overwrite_a=True, check_finite=False)
        return factor, sl.cho_solve(factor, y), y

    def _fit_kernel(self, x: sp.csr_matrix, dtype=_FIT_DTYPE) -> np.ndarray:
        """The fit's ``(n, n)`` kernel (:data:`_FIT_DTYPE`) as sparse x dense products, one block of
        :data:`_FIT_BLOCK` sentences' dense features at a time. Equal to the sparse x sparse
        product (whose result is dense anyway: every sentence shares words) at a fraction of its
        time, and without the whole ``(features, n)`` float64 matrix (540 MB for the section's
        5,638 fitted sentences): memory touched for the first time is what costs here (on this
        project's VM ~10 s per GB, see docs/performance.md)."""
        n = x.shape[0]
        x = x.astype(dtype)
        k = np.empty((n, n), dtype=dtype)
        for start in range(0, n, _FIT_BLOCK):
            stop = min(start + _FIT_BLOCK, n)
            # rows of a CSR slice, transposed: (features, block) dense; K is symmetric, so the
            # block's columns are written as rows (contiguous)
            k[start:stop] = self._kernel(x, x[start:stop].T.toarray()).T
        return k

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
            z = self._kernel(x[:, self._cols].astype(np.float32), self._train) @ self._alpha
            n = np.linalg.norm(z, axis=1)
            z /= np.maximum(n, 1e-12)[:, None]
            out[start : start + len(part)] = z
            unknown[start : start + len(part)] = unk
            norm[start : start + len(part)] = n
        return (out, unknown, norm) if return_norm else (out, unknown)


def _sparse_dense(a: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (sparse rows times a dense matrix) with the rows split over the cores.

    SciPy's product runs on one core and releases the GIL, so threads each computing a band of
    rows share the work; the result is the same to the bit (each row is computed as before).
    For 16,384 sentences against 6,638 fitted: 2.4 s on one core, 1.1 s on two (idle, 2 cores).
    """
    from .fast import _threads

    n = a.shape[0]
    parts = min(_threads(), max(n // _MIN_ROWS_PER_THREAD, 1))
    if parts < 2:
        return np.asarray(a @ b)
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((n, b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    bounds = np.linspace(0, n, parts + 1).astype(int)

    def band(i: int) -> None:
        out[bounds[i] : bounds[i + 1]] = a[bounds[i] : bounds[i + 1]] @ b

    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(band, range(parts)))
    return out


def _loo(factor, alpha: np.ndarray, y: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictions of the first ``m`` fitted rows: unit float32 vectors and their
    lengths before normalisation. ``factor``: Cholesky factor of ``K + ridge I``; ``alpha``: its
    solution for the targets ``y``. With ``A = (K + ridge I)^-1`` the prediction for row ``i`` of
    the map fitted without it is ``y_i - alpha_i / A_ii``."""
    import scipy.linalg as sl

    c, lower = factor
    # A = L^-T L^-1 (lower L; upper: A = U^-1 U^-T), so A_ii is the squared norm of column / row i
    # of the triangular inverse; it replaces the factor in place (no further n x n array)
    (trtri,) = sl.lapack.get_lapack_funcs(("trtri",), (c,))
    inv, info = trtri(c, lower=int(lower), overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular inverse failed (info {info})")
    a_ii = _triangle_sums_of_squares(inv, bool(lower))
    z = y[:m].astype(np.float64) - alpha[:m].astype(np.float64) / a_ii[:m, None]
    n = np.linalg.norm(z, axis=1)
    return (z / np.maximum(n, 1e-12)[:, None]).astype(np.float32), n.astype(np.float32)


def _triangle_sums_of_squares(t: np.ndarray, lower: bool, block: int = 256) -> np.ndarray:
    """Sums of squares of the columns (``lower``) or rows (upper) of the triangular matrix held in
    ``t``'s lower / upper triangle, ignoring the other (which holds what ``cho_factor`` left
    there); in blocks of ``block`` columns, without a copy of ``t``."""
    n = t.shape[0]
    out = np.zeros(n)
    for s in range(0, n, block):
        e = min(s + block, n)
        if lower:  # column j: rows j..n-1
            out[s:e] += (np.square(t[e:, s:e]).sum(axis=0, dtype=np.float64)
                         + np.square(np.tril(t[s:e, s:e])).sum(axis=0, dtype=np.float64))
        else:  # row i: columns i..n-1; this block of columns adds to rows 0..e-1
            out[:s] += np.square(t[:s, s:e]).sum(axis=1, dtype=np.float64)
            out[s:e] += np.square(np.triu(t[s:e, s:e])).sum(axis=1, dtype=np.float64)
    return out


_ERROR_FLOOR = 0.1


def error_scale(norm: np.ndarray) -> np.ndarray:
    """Relative size of a prediction's error from its length before normalisation:
    ``0.1 + max(0, 1 - norm)``. Measured on the bone-marrow section (3,000 fitted sentences plus
    the reference, 20,000 predicted): the mean error length ``|prediction - exact|`` rises from
    0.12 for norms near 1 to 0.27 for the shortest tenth (Spearman -0.65 between norm and
    error; measured with the first map, v1); the check divides each cell's robustness by this
    scale and calibrates the rest on its held-out cells."""
    return _ERROR_FLOOR + np.maximum(0.0, 1.0 - np.asarray(norm, dtype=np.float64))


__all__ = ["SurrogateModel", "error_scale", "sentence_words"]
