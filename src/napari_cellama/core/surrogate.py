"""Surrogate embedding mode: a fast learned map from sentence to embedding, checked against the model.

A cell sentence is an ordered list of at most ``top_k`` gene symbols from a fixed
panel, so its embedding is a smooth function of few discrete inputs. The
:class:`~napari_cellama.core.surrogate_model.SurrogateModel` (kernel ridge regression on the
sentence's words and their ranks) learns that function per model and vocabulary from exact
embeddings of a sample of the run's own sentences.

:class:`SurrogateEmbedder` wraps an exact embedder (any mode of
:class:`~napari_cellama.core.embed.Embedder`, a Dask
:class:`~napari_cellama.core.distributed.DistributedEmbedder`, any device). For one
:meth:`~SurrogateEmbedder.iter_encode` call it

1. reads what the persistent cache already holds (exact vectors of the base mode);
2. embeds the rest exactly when there are at most ``exact_below`` of them;
3. otherwise embeds a random ``n_fit + n_check`` of them exactly (more for runs above
   :data:`SAMPLE_GROWTH_FROM` sentences), fits the map on them
   plus exact vectors it has seen in this session (e.g. the reference; at most
   ``MAX_FIT_SENTENCES`` in all), holds each
   sampled sentence out by *leave-one-out* (in closed form) to measure it, and predicts
   the others (``heldout="split"``: fits ``n_fit`` and measures on the ``n_check`` others).
   Sentences with a word never seen in fitting, and sentences shared by at least
   ``FREQUENT_CELLS`` cells, are embedded exactly.

The exact vectors go to the cache as usual; predictions never do. Whether the
predictions are good enough for *labels* is decided by
:mod:`napari_cellama.core.surrogate_check` (exact re-embedding where the label is not
robust), which the transfer pipeline runs for this mode.

Measured on the bone-marrow section with the pbmc3k reference (docs/performance.md,
seventh session): mean cosine ~0.992 to the exact vectors (leave-one-out); the final labels
of the held-out cells agree with exact for 99.0-99.3% of them, and the check re-embeds ~1.4%
of the sentences for 99.44% agreement on all cells.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from .._constants import EMBED_MODE_SURROGATE, STAGE_EMBED, STAGE_SURROGATE_FIT
from ..validators import CellamaInputError
from .cache import sentence_keys
from .surrogate_model import SurrogateModel, error_scale, sentence_words

SURROGATE_VARIANT = "krr-poly2-wordpos-v2"
"""Identifies the features and map (recorded with the results)."""

DEFAULT_SURROGATE_FIT = 2000
"""Distinct sentences of a run embedded exactly to fit the surrogate (besides those seen before).
With the leave-one-out check (the default) the ``n_check`` sentences are fitted too: 3,000 in
all. (4,000 until the seventh session: with the map's better features, 3,000 re-embed about as
few sentences in the check - 780-925 against 17-1,133 on the section, seeds 0-2 - for 1,000
fewer sampled ones; docs/performance.md.)"""

DEFAULT_SURROGATE_CHECK = 1000
"""Distinct sentences of a run embedded exactly to check the surrogate (held out from fitting)."""

DEFAULT_EXACT_BELOW = 5000
"""Runs with at most this many sentences to embed are embedded exactly (fitting would cost as much)."""

SAMPLE_GROWTH_FROM = 100_000
"""Runs with more distinct sentences to embed than this sample more of them: ``n_fit + n_check``
times ``sqrt(sentences / SAMPLE_GROWTH_FROM)``, at most :data:`MAX_SAMPLE`. The check's bound
narrows with its held-out cells while the cells its width sends to re-embedding grow with the run:
at 1,014,216 cells (516,041 sentences) a fixed 3,000 re-embedded 42,083 sentences and took 366 s
(docs/performance.md, seventh session)."""

MAX_SAMPLE = 6000
"""The most sampled sentences a run grows to (:data:`SAMPLE_GROWTH_FROM`); a larger ``n_fit + n_check``
asked for is kept as it is. With leave-one-out the sample then fills 6,000 of the
:data:`MAX_FIT_SENTENCES` and 1,000 random reference sentences the rest."""

MAX_FIT_SENTENCES = 7000
"""At most this many exact vectors enter one fit besides the sample: earlier exact vectors (the
reference) fill what the run's own sample leaves (the kernel matrix is n x n float32)."""

FREQUENT_CELLS = 5
"""Sentences shared by at least this many cells are embedded exactly (at most ``MAX_FREQUENT``, the
most shared first): one exact vector fixes many cells, and the check's held-out sample then
holds no sentence that stands for thousands of cells."""

MAX_FREQUENT = 3000

LOO_CHECK_MARGIN = 0.003
"""How far above the target agreement the leave-one-out check aims. Its estimate (a one-sided 95%
bound) was above the agreement measured on a random 5,000 cells in both tiled runs of the last
session (300k cells: 99.23% estimated, 99.16% measured; 1M: 99.01%, 98.96%), though below the
measured agreement on all cells of the section in 5 of 5 runs (99.01% estimated, 99.22-99.28%
measured). Aiming 0.3 points higher re-embeds 1,900-2,750 of the section's 65,911 sentences
instead of 800-940 and measured 99.39-99.50% on all cells (seeds 0-2; the split check: 4,705
re-embedded, 99.45%)."""


def _frequent(missing: np.ndarray, counts: np.ndarray) -> np.ndarray:
    c = counts[missing]
    rows = missing[c >= FREQUENT_CELLS]
    if len(rows) > MAX_FREQUENT:
        rows = rows[np.argsort(-counts[rows], kind="stable")[:MAX_FREQUENT]]
    return np.sort(rows)


class SurrogateEmbedder:
    """Embedder of mode ``surrogate``: exact vectors where known or cheap, learned predictions elsewhere.

    Parameters
    ----------
    base
        the exact embedder (:class:`~napari_cellama.core.embed.Embedder` of any mode, or a
        :class:`~napari_cellama.core.distributed.DistributedEmbedder`); its cache holds the
        exact vectors.
    n_fit, n_check
        distinct sentences per run embedded exactly to fit and to check the surrogate (both grown
        for runs of more than :data:`SAMPLE_GROWTH_FROM` sentences, :meth:`sample_size`).
    exact_below
        runs with at most this many sentences left to embed are embedded exactly.
    seed
        seed of the random samples.
    target
        label agreement with the exact model that :meth:`iter_refine` must reach.
    max_exact_share
        at most this share of the predicted sentences is re-embedded exactly by :meth:`iter_refine`.
    heldout
        ``"loo"`` (default): all ``n_fit + n_check`` sampled sentences are fitted, and the check's
        held-out predictions are their *leave-one-out* predictions (each from the map fitted to
        all the other sentences, in closed form, :meth:`SurrogateModel.fit`); its threshold aims
        :data:`LOO_CHECK_MARGIN` above ``target``. ``"split"``: ``n_check`` of them are held out
        of the fit and predicted by the fitted map (three times fewer held-out cells at the
        defaults: a wider bound, more sentences re-embedded for the same agreement;
        docs/performance.md).

    Other attributes (``model_id``, ``device``, ``cache``, ``fingerprint``, ...) are the base's.
    After :meth:`iter_encode`, :attr:`last_stats` also holds ``predicted`` (sentences the
    surrogate computed) and ``check`` (cosine to exact on the held-out sentences).
    """

    mode = EMBED_MODE_SURROGATE

    def __init__(self, base, *, n_fit: int = DEFAULT_SURROGATE_FIT, n_check: int = DEFAULT_SURROGATE_CHECK,
                 exact_below: int = DEFAULT_EXACT_BELOW, seed: int = 0, target: float = 0.99,
                 max_exact_share: float = 1.0, heldout: str = "loo"):
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

    def sample_size(self, to_embed: int) -> tuple[int, int]:
        """``(fitted, sampled)`` sentences for a run with ``to_embed`` sentences to embed: ``n_fit``
        and ``n_fit + n_check``, grown above :data:`SAMPLE_GROWTH_FROM` (see there)."""
        total = self.n_fit + self.n_check
        grow = np.sqrt(max(1.0, to_embed / SAMPLE_GROWTH_FROM))
        n = min(int(round(total * grow)), max(total, MAX_SAMPLE))
        return int(round(self.n_fit * n / total)), n

    @property
    def check_margin(self) -> float:
        """How far above ``target`` the check aims (:data:`LOO_CHECK_MARGIN` for leave-one-out)."""
        return LOO_CHECK_MARGIN if self.heldout == "loo" else 0.0

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
            n_fit, n_sample = self.sample_size(len(missing))
            sample = rng.choice(pool, min(n_sample, len(pool)), replace=False)
            if self.heldout == "loo":  # every sampled sentence is fitted and held out by leave-one-out
                fit_rows = heldout = np.sort(sample)
            else:
                fit_rows, heldout = np.sort(sample[:n_fit]), np.sort(sample[n_fit:])
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


__all__ = ["DEFAULT_EXACT_BELOW", "DEFAULT_SURROGATE_CHECK", "DEFAULT_SURROGATE_FIT", "LOO_CHECK_MARGIN", "MAX_SAMPLE",
           "SAMPLE_GROWTH_FROM", "SURROGATE_VARIANT",
           "SurrogateEmbedder", "SurrogateModel", "error_scale", "sentence_words"]
