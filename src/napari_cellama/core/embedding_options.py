"""How sentences become vectors, decided once per front end: :class:`EmbeddingOptions` and
:func:`make_embedder`, the one factory of embedders.

Every front end (CLI commands, docks, the pipeline's default) builds one
:class:`EmbeddingOptions` and asks :func:`make_embedder` for the embedder:

* ``mode`` ``exact`` / ``onnx`` / ``fast`` (or ``None``, the default of the device) gives an
  :class:`~napari_cellama.core.embed.Embedder`;
* ``scheduler`` (a ``distributed.Client``, an address or ``local:N``) gives a
  :class:`~napari_cellama.core.distributed.DistributedEmbedder` instead;
* ``mode="surrogate"`` wraps either in a
  :class:`~napari_cellama.core.surrogate.SurrogateEmbedder` whose exact embedder runs
  ``exact_mode`` (default: the device's default mode).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._constants import DEFAULT_BATCH_SIZE, EMBED_MODE_SURROGATE, EMBEDDING_MODES
from ..validators import CellamaInputError


@dataclass(frozen=True, kw_only=True)
class EmbeddingOptions:
    """Everything that decides how sentences are embedded.

    Attributes
    ----------
    model
        model name, local folder or ``None`` (the offline default).
    mode
        ``exact``, ``onnx``, ``fast``, ``surrogate`` or ``None`` (``onnx`` on a CPU, ``exact`` on a GPU).
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    cache
        persistent embedding cache: ``None``/``False`` off, ``True`` default folder, or a folder.
    batch_size
        sentences per forward pass.
    allow_download
        let a model given by name be fetched from the Hugging Face Hub.
    scheduler
        Dask scheduler (client, address or ``local:N``) to embed on workers; ``None``: in process.
    exact_mode
        for ``mode="surrogate"``: the mode of the exact embedder (``None``: the device's default).
    surrogate_fit, surrogate_check
        for ``mode="surrogate"``: distinct sentences per run embedded exactly to fit / to check.
    target_agreement
        for ``mode="surrogate"``: label agreement with the exact model the check must reach.
    max_exact_share
        for ``mode="surrogate"``: at most this share of the predicted sentences is re-embedded
        exactly by the check (below 1, a run may not reach the target: it then warns and records it).
    """

    model: Any = None
    mode: str | None = None
    device: str = "auto"
    cache: Any = None
    batch_size: int = DEFAULT_BATCH_SIZE
    allow_download: bool = False
    scheduler: Any = None
    exact_mode: str | None = None
    surrogate_fit: int | None = None
    surrogate_check: int | None = None
    target_agreement: float = 0.99
    max_exact_share: float = 1.0

    def __post_init__(self):
        mode = None if self.mode is None or str(self.mode).strip() == "" else str(self.mode).strip().lower()
        if mode is not None and mode not in EMBEDDING_MODES:
            raise CellamaInputError(f"unknown embedding mode {self.mode!r}; use {', '.join(EMBEDDING_MODES)}")
        object.__setattr__(self, "mode", mode)
        if self.exact_mode is not None and str(self.exact_mode).lower() == EMBED_MODE_SURROGATE:
            raise CellamaInputError("exact_mode must be an exact mode (exact, onnx or fast)")
        if not 0.0 < float(self.target_agreement) <= 1.0:
            raise CellamaInputError(f"target agreement must be in (0, 1], got {self.target_agreement}")
        if not 0.0 <= float(self.max_exact_share) <= 1.0:
            raise CellamaInputError(f"max exact share must be in [0, 1], got {self.max_exact_share}")
        for name, least in (("surrogate_fit", 1), ("surrogate_check", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < least):
                raise CellamaInputError(f"{name} must be a whole number >= {least} (distinct sentences), got {value!r}")

    @property
    def surrogate(self) -> bool:
        return self.mode == EMBED_MODE_SURROGATE

    def replace(self, **changes) -> EmbeddingOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args) -> EmbeddingOptions:
        """Options of a CLI command's parsed arguments (``--model``, ``--mode``, ``--device``,
        ``--cache``, ``--batch-size``, ``--allow-download``, ``--dask-scheduler``; absent ones keep
        their defaults, except the cache, which the CLI uses by default)."""
        def get(name, default=None):
            return getattr(args, name, default)
        return cls(
            model=get("model"),
            mode=get("mode"),
            device=get("device") or "auto",
            cache=get("cache", True),
            batch_size=get("batch_size") or DEFAULT_BATCH_SIZE,
            allow_download=bool(get("allow_download", False)),
            scheduler=get("dask_scheduler"),
        )


def make_embedder(options: EmbeddingOptions | None = None, **changes):
    """The embedder ``options`` describe (keyword arguments replace fields of ``options``)."""
    options = options or EmbeddingOptions()
    if changes:
        options = options.replace(**changes)
    base_mode = options.exact_mode if options.surrogate else options.mode
    common = {"device": options.device, "batch_size": options.batch_size, "allow_download": options.allow_download,
                  "mode": base_mode, "cache": options.cache}
    if options.scheduler is not None:
        from .distributed import DistributedEmbedder, parse_scheduler

        if isinstance(options.scheduler, str):
            parse_scheduler(options.scheduler)  # a bad value fails before any work
        base = DistributedEmbedder(options.scheduler, options.model, **common)
    else:
        from .embed import Embedder

        base = Embedder(options.model, **common)
    if not options.surrogate:
        return base
    from .surrogate import DEFAULT_SURROGATE_CHECK, DEFAULT_SURROGATE_FIT, SurrogateEmbedder

    fit = DEFAULT_SURROGATE_FIT if options.surrogate_fit is None else options.surrogate_fit
    check = DEFAULT_SURROGATE_CHECK if options.surrogate_check is None else options.surrogate_check
    return SurrogateEmbedder(base, n_fit=fit, n_check=check, target=options.target_agreement,
                             max_exact_share=options.max_exact_share)


__all__ = ["EmbeddingOptions", "make_embedder"]
