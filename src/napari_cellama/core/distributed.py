"""Embedding beyond one machine: Dask distributed workers.

:class:`DistributedEmbedder` is an :class:`~napari_cellama.core.embed.Embedder`
whose batches run on the workers of a Dask cluster. Everything else stays as in
the single-process path: sentences are de-duplicated and looked up in the
persistent cache on the client, the remaining ones are cut into the *same*
length-sorted batches, and consecutive batches are sent as one task. Each
worker process loads the model once (a :class:`~distributed.WorkerPlugin`
loads it when the worker joins; tasks reuse it), embeds its batches one by one
exactly as :meth:`Embedder.encode_batch` does and, when a cache is used,
writes them to the cache in its usual format (each task its own atomic pack,
see :mod:`napari_cellama.core.cache`). On a multi-machine cluster the cache
folder must be on a shared filesystem (``NAPARI_CELLAMA_CACHE``), or pass
``worker_cache=False`` to let the client write the cache instead.

Scheduler addresses (``scheduler=``, CLI ``--dask-scheduler``):

``tcp://host:8786`` (or any address ``distributed.Client`` accepts)
    an existing cluster; it stays up afterwards.
``local:N``
    a :class:`~distributed.LocalCluster` of ``N`` single-threaded worker
    processes on this machine, started and closed around the run.

Requirements: ``dask[distributed]``, and napari-cellama plus the model on every
worker (the model is found there the same way as on the client; the workers'
model fingerprint must equal the client's, which is checked).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Sequence

import numpy as np

from .._constants import DEFAULT_BATCH_SIZE
from ..validators import CellamaInputError
from .embed import Embedder
from .embedding_options import make_embedder

DEFAULT_TASK_SENTENCES = 1024
"""Sentences per Dask task (whole batches; the task count bounds the progress granularity)."""

_PLUGIN_PREFIX = "napari-cellama-embedder"
_WORKER_EMBEDDERS: dict[tuple, Embedder] = {}
_WORKER_LOCK = threading.Lock()
_LOADS = 0  # models loaded by this (worker) process


def _config_key(config: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in config.items()))


def worker_embedder(config: dict) -> Embedder:
    """The worker process's :class:`Embedder` for ``config`` (created and loaded once per process)."""
    global _LOADS
    key = _config_key(config)
    with _WORKER_LOCK:
        emb = _WORKER_EMBEDDERS.get(key)
        if emb is None:
            emb = make_embedder(model=config["model"], device=config["device"], batch_size=config["batch_size"],
                                allow_download=config["allow_download"], mode=config["mode"],
                                cache=config["cache"])
            emb.load()
            _LOADS += 1
            _WORKER_EMBEDDERS[key] = emb
    return emb


try:  # the plugin base class only exists with distributed installed
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - distributed is a dependency
    _WorkerPluginBase = object


class EmbedderPlugin(_WorkerPluginBase):
    """Loads the embedding model once in every worker (also in workers that join later)."""

    def __init__(self, config: dict):
        self.config = dict(config)

    def setup(self, worker) -> None:
        worker_embedder(self.config)


def _embed_task(config: dict, batches: list[list[str]], keys: np.ndarray | None) -> tuple[np.ndarray, str, bool]:
    """Worker side: embed whole batches in order; cache them; return vectors and the fingerprint."""
    emb = worker_embedder(config)
    out = np.concatenate([emb.encode_batch(b) for b in batches]) if batches else np.zeros((0, 0), np.float32)
    stored = False
    if emb.cache is not None and config.get("worker_cache", True) and len(out):
        emb.cache.store(emb.cache_namespace, None, out, keys=np.asarray(keys, dtype="S16"), meta=emb.describe())
        stored = True
    return out, emb.fingerprint(), stored


def parse_scheduler(scheduler) -> tuple[str, int | str]:
    """``("local", n_workers)`` for ``local:N``, else ``("address", address)``."""
    if scheduler is None:
        raise CellamaInputError("no Dask scheduler given; use an address such as tcp://host:8786 or local:N")
    text = str(scheduler).strip()
    if text.lower() == "local" or text.lower().startswith("local:"):
        rest = text[5:].lstrip(":")
        try:
            n = int(rest) if rest else (os.cpu_count() or 1)
        except ValueError:
            raise CellamaInputError(f"bad Dask scheduler {text!r}; use local:N with N workers, e.g. local:2") from None
        if n < 1:
            raise CellamaInputError(f"bad Dask scheduler {text!r}: local:N needs N >= 1 workers")
        return "local", n
    try:  # a malformed address fails here, in one line, not when the client connects
        from distributed.comm.addressing import parse_address, parse_host_port

        scheme, location = parse_address(text)
        if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
            parse_host_port(location)
    except (ImportError, ValueError, TypeError) as err:
        if isinstance(err, ImportError):
            return "address", text
        raise CellamaInputError(f"bad Dask scheduler address {text!r} ({err}); use tcp://host:8786 or local:N") from None
    return "address", text


class DistributedEmbedder(Embedder):
    """An :class:`Embedder` whose batches run on Dask distributed workers.

    Parameters
    ----------
    scheduler
        a ``distributed.Client``, a scheduler address, or ``local:N`` (see module docstring).
    task_sentences
        sentences per task (rounded to whole batches).
    worker_cache
        workers write their embeddings to the cache (needs a folder shared with the
        client); ``False``: the client writes them.
    model, device, batch_size, allow_download, mode, cache
        as for :class:`Embedder`; the workers use the same values.

    Use it as a context manager (or call :meth:`close`) to stop a ``local:N`` cluster.
    """

    def __init__(self, scheduler, model=None, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
                 allow_download: bool = False, mode: str | None = None, cache=None,
                 task_sentences: int = DEFAULT_TASK_SENTENCES, worker_cache: bool = True):
        super().__init__(model, device=device, batch_size=batch_size, allow_download=allow_download,
                         mode=mode, cache=cache)
        self.scheduler = scheduler
        self.task_sentences = max(int(task_sentences), 1)
        self.worker_cache = bool(worker_cache)
        self._client = None
        self._cluster = None
        self._own_client = False
        self._plugin_name = None

    # ------------------------------------------------------------------ cluster
    @property
    def client(self):
        """The ``distributed.Client`` (connected, or a local cluster started, on first use)."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if isinstance(self.scheduler, Client):
                self._client = self.scheduler
            else:
                kind, value = parse_scheduler(self.scheduler)
                if kind == "local":
                    self._cluster = LocalCluster(n_workers=int(value), threads_per_worker=1, processes=True,
                                                 dashboard_address=None)
                    self._client = Client(self._cluster)
                else:
                    try:
                        self._client = Client(value, timeout="30s")
                    except OSError as err:
                        raise CellamaInputError(f"could not reach the Dask scheduler at {value} ({err})") from None
                self._own_client = True
        return self._client

    def _config(self) -> dict:
        return {
            "model": self.requested,
            "device": self.device,
            "batch_size": self.batch_size,
            "allow_download": self.allow_download,
            "mode": self.mode,
            "cache": None if self.cache is None else str(self.cache.root),
            "worker_cache": self.worker_cache,
        }

    def _ensure_plugin(self) -> None:
        if self._plugin_name is None:
            config = self._config()
            name = f"{_PLUGIN_PREFIX}-{abs(hash(_config_key(config))):x}"
            self.client.register_plugin(EmbedderPlugin(config), name=name)
            self._plugin_name = name

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        """Close the client and the local cluster this embedder started (not a client it was given)."""
        if self._own_client and self._client is not None:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        self._client = self._cluster = None
        self._plugin_name = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ encoding
    @property
    def loaded(self) -> bool:
        return True  # the model lives on the workers; the client never loads it

    def load(self) -> None:
        """Load the model on the workers (the client does not need it)."""
        self._ensure_plugin()

    @property
    def dimension(self) -> int:
        if self.mode != "exact":
            import json

            from .fast import prepare_fast_model

            return int(json.loads((prepare_fast_model(self.folder, fingerprint=self.fingerprint())
                                   / "export.json").read_text())["dimension"])
        return super().dimension

    def describe(self) -> dict:
        info = super().describe()
        info["scheduler"] = str(self.scheduler)
        return info

    def _iter_embed(self, sentences: list[str], keys, stage: str, done: int, total: int):
        from distributed import as_completed

        self._ensure_plugin()
        config = self._config()
        fingerprint = self.fingerprint()
        batches = self.batches(sentences)
        per_task = max(self.task_sentences // self.batch_size, 1)
        groups = [batches[i : i + per_task] for i in range(0, len(batches), per_task)]
        futures = {}
        call = uuid.uuid4().hex  # task keys unique per call: Dask would reuse a result with the same key
        for gi, group in enumerate(groups):
            texts = [[sentences[j] for j in b] for b in group]
            gkeys = None if keys is None else keys[np.concatenate(group)]
            fut = self.client.submit(_embed_task, config, texts, gkeys, pure=False,
                                     key=f"cellama-embed-{call}-{gi}")
            futures[fut] = gi
        out = None
        client_store = []
        for fut in as_completed(list(futures)):
            vec, worker_fp, stored = fut.result()
            if worker_fp != fingerprint:
                raise CellamaInputError(
                    f"the Dask workers load a different model (fingerprint {worker_fp}) than this "
                    f"process ({fingerprint}); install the same model on every worker"
                )
            rows = np.concatenate(groups[futures[fut]])
            if out is None:
                out = np.empty((len(sentences), vec.shape[1]), dtype=np.float32)
            out[rows] = vec
            if self.cache is not None and not stored:
                client_store.append(rows)
            done += len(rows)
            yield (stage, done, total)
        if client_store:
            rows = np.concatenate(client_store)
            self.cache.store(self.cache_namespace, None, out[rows], keys=keys[rows], meta=self.describe())
        return out


def embed_distributed(sentences: Sequence[str], scheduler, callback=None, **kwargs) -> np.ndarray:
    """Embed ``sentences`` on a Dask cluster (see :class:`DistributedEmbedder` for ``kwargs``)."""
    with DistributedEmbedder(scheduler, **kwargs) as emb:
        return emb.encode(sentences, callback=callback)


__all__ = ["DEFAULT_TASK_SENTENCES", "DistributedEmbedder", "EmbedderPlugin", "embed_distributed",
           "parse_scheduler", "worker_embedder"]
