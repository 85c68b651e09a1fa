"""Provisional labels: an early estimate a long run publishes while it goes on (issue 15).

A run's generator still yields only ``(stage, done, total)``. When it has an early estimate
of the labels (in surrogate mode: the method's labels from the surrogate's embeddings, before the
exact re-embedding of the cells whose label is not robust), it puts the per-cell table into
the :class:`ProvisionalChannel` the front end listens on, then yields
``(STAGE_PROVISIONAL, n, n)``; a front end that sees that stage reads
:meth:`ProvisionalChannel.take` and shows the table marked as provisional, to be replaced by
the final result. Nothing is computed when nobody listens.

A front end listens around the run's generator, on the thread that runs it::

    channel = ProvisionalChannel()
    with listening(channel):
        result = yield from iter_transfer(...)

(the transfer dock does this in :mod:`napari_cellama._qt.provisional_view`). The engine side
is :func:`publish_labels`, called by :func:`~napari_cellama.core.pipeline.iter_transfer` in
surrogate mode with the labels of the run's own method (heads, thresholds, Unknown call; or the
kNN vote for ``knn``) from the surrogate's embeddings, which the surrogate check computes before
it re-embeds the cells whose label is not robust: they agree with the final labels on ~99 % of
the section's cells (docs/performance.md, "Time to first useful picture"). A kNN vote of the
surrogate vectors published right after embedding (:func:`iter_publish_knn`, kept for callers)
agreed with the final ensemble labels on only 12 % and is no longer published by the pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .._constants import CELL_ID, CELL_TYPE, DEFAULT_N_NEIGHBORS, STAGE_PROVISIONAL, TRANSFERRED_TYPE

_local = threading.local()


class ProvisionalChannel:
    """Where a run publishes provisional tables; read by the front end (thread-safe).

    ``take()`` returns the latest table not yet taken (or None); ``published`` counts them.
    A table has one row per cell (index ``cell_id``) with the columns of a transfer table
    (``transferred_type``, ``cell_type``, ``confidence``, ``distance``, ...); ``info`` holds
    what produced it (e.g. ``{"embedding_mode": "surrogate", "source": "..."}``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: pd.DataFrame | None = None
        self.info: dict = {}
        self.published = 0

    def publish(self, table: pd.DataFrame, **info) -> None:
        with self._lock:
            self._table = table
            self.info = dict(info)
            self.published += 1

    def take(self) -> pd.DataFrame | None:
        with self._lock:
            table, self._table = self._table, None
            return table


@contextmanager
def listening(channel: ProvisionalChannel):
    """Make ``channel`` receive what runs on this thread publish, for the ``with`` block."""
    previous = getattr(_local, "channel", None)
    _local.channel = channel
    try:
        yield channel
    finally:
        _local.channel = previous


def active_channel() -> ProvisionalChannel | None:
    """The channel listening on this thread, or None."""
    return getattr(_local, "channel", None)


def iter_publish_knn(
    query_embeddings: np.ndarray,
    reference_embeddings: np.ndarray,
    reference_labels: Sequence,
    *,
    sentences: Sequence[str],
    cell_ids: Sequence,
    k: int = DEFAULT_N_NEIGHBORS,
    codes: np.ndarray | None = None,
    **info,
) -> Iterator:
    """If a channel listens: kNN labels of these (approximate) query embeddings, one search per
    distinct sentence, published with ``info``; then yields ``(STAGE_PROVISIONAL, n, n)``.
    ``codes``: the sentences' :func:`pandas.factorize` codes, ``query_embeddings`` then holding
    one row per distinct sentence (None: one row per cell).
    Does nothing (yields nothing) when nobody listens."""
    channel = active_channel()
    if channel is None or len(cell_ids) == 0:
        return
    from .transfer import iter_knn_transfer

    if codes is None:
        codes, _ = pd.factorize(pd.Series(list(sentences), dtype=object))
        rows = query_embeddings[np.unique(codes, return_index=True)[1]]
    else:
        rows = query_embeddings
    table = yield from iter_knn_transfer(rows, reference_embeddings, reference_labels, k=k)
    table = table.iloc[codes].copy()
    table.index = pd.Index(np.asarray(cell_ids, dtype=str), name=CELL_ID)
    channel.publish(table, **info)
    yield (STAGE_PROVISIONAL, len(table), len(table))


def publish_labels(labels: Sequence, cell_ids: Sequence, **info) -> bool:
    """If a channel listens: publish per-cell final-style ``labels`` (e.g. the surrogate check's
    labels of the run's own method, before its exact re-embedding) as a table with ``cell_type``
    and ``transferred_type``; returns whether it did (the caller then yields ``STAGE_PROVISIONAL``)."""
    channel = active_channel()
    if channel is None or len(cell_ids) == 0:
        return False
    labels = np.asarray(labels, dtype=object)
    table = pd.DataFrame({TRANSFERRED_TYPE: labels, CELL_TYPE: labels},
                         index=pd.Index(np.asarray(cell_ids, dtype=str), name=CELL_ID))
    channel.publish(table, **info)
    return True


__all__ = ["STAGE_PROVISIONAL", "ProvisionalChannel", "active_channel", "iter_publish_knn", "listening",
           "publish_labels"]
