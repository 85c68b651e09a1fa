"""Options of the niche, fine-tuning and prototype tasks: one frozen dataclass per task.

A front end builds an options value once - the CLI from its flags (``from_args`` in each
``_cli`` module), a dock from its form - and hands it to the core function
(``run_niches(adata, labels, cell_types, options=NicheOptions(...))``). The value checks
itself when it is built (through :mod:`napari_cellama.validators`, so a bad value raises
:class:`~napari_cellama.validators.CellamaInputError` before any work starts), names and
defaults come from :mod:`napari_cellama._constants`, and a result keeps the options it was
made with (``result.options``); ``to_dict()`` gives the JSON / ``uns`` form and
``from_dict()`` reads it back.

Either-or choices are types, not pairs of keywords of which one must be None:

* a niche neighbourhood is :class:`KNearest` (``k`` nearest cells) **or** :class:`Radius`
  (every cell within ``radius`` microns);
* a niche clustering is :class:`Leiden` (``resolution``, ``graph_neighbors``) **or**
  :class:`KMeans` (``n_clusters``).

Vocabularies are enums (:class:`~napari_cellama._constants.NicheMode`,
:class:`~napari_cellama._constants.CellGenes`, :class:`~napari_cellama._constants.GeneRank`)
whose members equal their string spelling.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from .._constants import (
    DEFAULT_FINETUNE_AUGMENT_KEEP,
    DEFAULT_FINETUNE_AUGMENT_VIEWS,
    DEFAULT_FINETUNE_BATCH_SIZE,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_FINETUNE_HVG,
    DEFAULT_FINETUNE_LEARNING_RATE,
    DEFAULT_FINETUNE_NEIGHBOR_FRACTION,
    DEFAULT_FINETUNE_PAIR_NEIGHBORS,
    DEFAULT_FINETUNE_PAIRS,
    DEFAULT_FINETUNE_PCS,
    DEFAULT_FINETUNE_TOP_K,
    DEFAULT_FINETUNE_VALIDATION,
    DEFAULT_FINETUNE_WARMUP,
    DEFAULT_NICHE_GRAPH_NEIGHBORS,
    DEFAULT_NICHE_MARKERS,
    DEFAULT_NICHE_RESOLUTION,
    DEFAULT_PROTOTYPE_FRACTION,
    DEFAULT_PROTOTYPE_TEMPERATURE,
    DEFAULT_PROTOTYPE_TOP_K,
    DEFAULT_RANDOM_STATE,
    DEFAULT_SPATIAL_NEIGHBORS,
    DEFAULT_TOP_K,
    CellGenes,
    ClusterMethod,
    GeneRank,
    NicheMode,
)
from ..validators import (
    CellamaInputError,
    check_choice,
    check_clustering,
    check_fraction,
    check_int,
    check_neighborhood,
    check_positive_number,
    check_top_k,
)


def _set(obj, name: str, value) -> None:
    """Store a checked (normalised) value on a frozen dataclass while it is being built."""
    object.__setattr__(obj, name, value)


def _enum(enum, value, what: str):
    return enum(check_choice(str(value), enum.values(), what))


class _Options:
    """``to_dict`` / ``from_dict`` / ``replace`` shared by the options dataclasses."""

    def to_dict(self) -> dict:
        """Plain JSON-able values (enums as their text, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The options of a ``to_dict()`` (unknown keys are refused with their names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CellamaInputError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes):
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


def _plain(value):
    if isinstance(value, _Options):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- niche


@dataclass(frozen=True)
class KNearest(_Options):
    """A cell's niche is its ``k`` nearest cells (centroid distance)."""

    k: int = DEFAULT_SPATIAL_NEIGHBORS

    def __post_init__(self):
        _set(self, "k", check_int(self.k, "the number of spatial neighbours"))


@dataclass(frozen=True)
class Radius(_Options):
    """A cell's niche is every cell whose centroid lies within ``radius`` microns."""

    radius: float

    def __post_init__(self):
        _set(self, "radius", check_positive_number(self.radius, "the neighbourhood radius"))


@dataclass(frozen=True)
class Leiden(_Options):
    """Leiden on the exact cosine kNN graph of the embeddings (``graph_neighbors`` per cell)."""

    resolution: float = DEFAULT_NICHE_RESOLUTION
    graph_neighbors: int = DEFAULT_NICHE_GRAPH_NEIGHBORS
    method = ClusterMethod.LEIDEN

    def __post_init__(self):
        _set(self, "resolution", check_positive_number(self.resolution, "the Leiden resolution"))
        _set(self, "graph_neighbors", check_int(self.graph_neighbors, "the neighbours per cell of the embedding graph",
                                                minimum=2))


@dataclass(frozen=True)
class KMeans(_Options):
    """KMeans with ``n_clusters`` clusters (``n_init=10``)."""

    n_clusters: int
    method = ClusterMethod.KMEANS

    def __post_init__(self):
        _set(self, "n_clusters", check_int(self.n_clusters, "the number of clusters", minimum=2))


Neighborhood = KNearest | Radius
Clustering = Leiden | KMeans


def neighborhood_from(k: int | None = None, radius: float | None = None) -> Neighborhood:
    """``k`` or ``radius`` (not both; neither: the default ``k``) as a neighbourhood."""
    k, radius = check_neighborhood(k, radius, DEFAULT_SPATIAL_NEIGHBORS)
    return Radius(radius) if radius is not None else KNearest(k)


def clustering_from(resolution: float | None = None, n_clusters: int | None = None,
                    graph_neighbors: int = DEFAULT_NICHE_GRAPH_NEIGHBORS) -> Clustering:
    """``resolution`` (Leiden) or ``n_clusters`` (KMeans), not both; neither: default Leiden."""
    method, value = check_clustering(resolution, n_clusters, DEFAULT_NICHE_RESOLUTION)
    if method == ClusterMethod.KMEANS:
        return KMeans(value)
    return Leiden(value, graph_neighbors)


def _from_dict_tagged(value, kinds: tuple, what: str):
    if isinstance(value, kinds):
        return value
    if isinstance(value, Mapping):
        for kind in kinds:
            names = {f.name for f in dataclasses.fields(kind)}
            required = {f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING}
            if required <= set(value) <= names:
                return kind(**value)
    raise CellamaInputError(f"{what} must be one of {', '.join(k.__name__ for k in kinds)}, got {value!r}")


@dataclass(frozen=True)
class NicheOptions(_Options):
    """How niche sentences are written, embedded and clustered (see :mod:`napari_cellama.core.niche`)."""

    neighborhood: Neighborhood = KNearest()
    clustering: Clustering = Leiden()
    mode: NicheMode = NicheMode.GENES_AND_NICHE
    top_k: int = DEFAULT_TOP_K
    n_markers: int = DEFAULT_NICHE_MARKERS
    random_state: int = DEFAULT_RANDOM_STATE
    max_cells: int | None = None
    """Cluster a random sample of at most this many cells (seeded by ``random_state``)."""
    spatial_key: str = "spatial"

    def __post_init__(self):
        _set(self, "neighborhood", _from_dict_tagged(self.neighborhood, (KNearest, Radius), "the neighbourhood"))
        _set(self, "clustering", _from_dict_tagged(self.clustering, (Leiden, KMeans), "the clustering"))
        _set(self, "mode", _enum(NicheMode, self.mode, "niche sentence mode"))
        _set(self, "top_k", check_top_k(self.top_k))
        _set(self, "n_markers", check_int(self.n_markers, "the number of marker genes per cluster"))
        _set(self, "random_state", check_int(self.random_state, "the random seed", minimum=0))
        if self.max_cells is not None:
            _set(self, "max_cells", check_int(self.max_cells, "the maximum number of cells"))

    @classmethod
    def from_flags(cls, *, k: int | None = None, radius: float | None = None, resolution: float | None = None,
                   n_clusters: int | None = None, graph_neighbors: int = DEFAULT_NICHE_GRAPH_NEIGHBORS,
                   **fields) -> NicheOptions:
        """Options from flat values (the CLI flags, the dock's form, the former keywords):
        ``k`` or ``radius``, ``resolution`` or ``n_clusters``, the other fields as they are."""
        return cls(neighborhood=neighborhood_from(k, radius),
                   clustering=clustering_from(resolution, n_clusters, graph_neighbors), **fields)

    def flat(self) -> dict:
        """The flat record of a run (``k``, ``radius``, ``method``, ``resolution``, ``n_clusters``, ...)."""
        nb, cl = self.neighborhood, self.clustering
        return {
            "k": nb.k if isinstance(nb, KNearest) else None,
            "radius": nb.radius if isinstance(nb, Radius) else None,
            "mode": self.mode.value,
            "top_k": self.top_k,
            "method": cl.method.value,
            "resolution": cl.resolution if isinstance(cl, Leiden) else None,
            "n_clusters": cl.n_clusters if isinstance(cl, KMeans) else None,
            "graph_neighbors": cl.graph_neighbors if isinstance(cl, Leiden) else DEFAULT_NICHE_GRAPH_NEIGHBORS,
            "n_markers": self.n_markers,
            "random_state": self.random_state,
            "max_cells": self.max_cells,
        }


# --------------------------------------------------------------------------- fine-tuning


def _top_ks(value) -> tuple[int, ...]:
    values = [value] if np.isscalar(value) else list(value)
    if not values:
        raise CellamaInputError("give at least one top-k value")
    return tuple(dict.fromkeys(check_top_k(v) for v in values))


@dataclass(frozen=True)
class FinetuneOptions(_Options):
    """How a sentence model is fine-tuned on a reference (see :mod:`napari_cellama.core.finetune`)."""

    label_key: str | None = None
    """Cell-type column: pairs of different types get similarity 0; needed by ``prototypes``."""
    metadata: tuple[str, ...] = ()
    """obs columns: pairs that differ in any of them get similarity 0."""
    append_metadata: bool = False
    """Also write the ``metadata`` columns into the training sentences."""
    top_k: tuple[int, ...] = DEFAULT_FINETUNE_TOP_K
    """Genes per sentence; several values mix sentence lengths."""
    genes: tuple[str, ...] | None = None
    """Write sentences with these genes only (a query's panel)."""
    n_pairs: int = DEFAULT_FINETUNE_PAIRS
    neighbor_fraction: float = DEFAULT_FINETUNE_NEIGHBOR_FRACTION
    n_neighbors: int = DEFAULT_FINETUNE_PAIR_NEIGHBORS
    n_hvg: int = DEFAULT_FINETUNE_HVG
    n_pcs: int = DEFAULT_FINETUNE_PCS
    epochs: int = DEFAULT_FINETUNE_EPOCHS
    batch_size: int = DEFAULT_FINETUNE_BATCH_SIZE
    learning_rate: float = DEFAULT_FINETUNE_LEARNING_RATE
    warmup: float = DEFAULT_FINETUNE_WARMUP
    validation_fraction: float = DEFAULT_FINETUNE_VALIDATION
    augment_views: int = DEFAULT_FINETUNE_AUGMENT_VIEWS
    augment_keep: float = DEFAULT_FINETUNE_AUGMENT_KEEP
    prototypes: Any = None
    """Marker table (path, ``"default"`` or ``{type: [genes]}``) for prototype guidance."""
    prototype_fraction: float = DEFAULT_PROTOTYPE_FRACTION
    prototype_positive: float = 1.0
    prototype_negative: float = 0.0
    seed: int = DEFAULT_RANDOM_STATE
    eval_steps: int | None = None
    """Also validate every N steps (and keep the best weights when ``keep_best``)."""
    keep_best: bool = True

    def __post_init__(self):
        _set(self, "top_k", _top_ks(self.top_k))
        _set(self, "metadata", tuple(str(c) for c in (self.metadata or ())))
        if self.genes is not None:
            _set(self, "genes", tuple(str(g) for g in self.genes))
        _set(self, "n_pairs", check_int(self.n_pairs, "the number of pairs"))
        _set(self, "n_neighbors", check_int(self.n_neighbors, "the number of neighbours per anchor cell"))
        _set(self, "n_hvg", check_int(self.n_hvg, "the number of highly variable genes"))
        _set(self, "n_pcs", check_int(self.n_pcs, "the number of principal components"))
        if self.n_pcs < 2:
            raise CellamaInputError("the pair labels need at least 2 principal components (default "
                                    f"{DEFAULT_FINETUNE_PCS}), got {self.n_pcs}")
        _set(self, "epochs", check_int(self.epochs, "the number of epochs"))
        _set(self, "batch_size", check_int(self.batch_size, "the batch size"))
        _set(self, "neighbor_fraction", check_fraction(self.neighbor_fraction, "the share of neighbour pairs"))
        _set(self, "warmup", check_fraction(self.warmup, "the warm-up share", high_open=True))
        _set(self, "validation_fraction", check_fraction(self.validation_fraction, "the validation share",
                                                         high_open=True))
        _set(self, "prototype_fraction", check_fraction(self.prototype_fraction, "the share of prototype pairs",
                                                        low_open=True))
        _set(self, "augment_views", check_int(self.augment_views, "the number of down-sampled copies", minimum=0))
        _set(self, "augment_keep", check_fraction(self.augment_keep, "the share of counts kept in a down-sampled copy",
                                                  low_open=True, high_open=True))
        _set(self, "learning_rate", check_positive_number(self.learning_rate, "the learning rate"))
        _set(self, "prototype_positive", float(self.prototype_positive))
        _set(self, "prototype_negative", float(self.prototype_negative))
        _set(self, "seed", check_int(self.seed, "the random seed", minimum=0))
        if self.eval_steps is not None:
            _set(self, "eval_steps", check_int(self.eval_steps, "the evaluation interval (steps)"))
        if self.prototypes is not None and self.label_key is None:
            raise CellamaInputError("prototype guidance needs the reference's cell-type column (--label-key)")


# --------------------------------------------------------------------------- prototypes


@dataclass(frozen=True)
class PrototypeOptions(_Options):
    """How cells are assigned to marker prototypes (see :mod:`napari_cellama.core.prototypes`)."""

    top_k: int = DEFAULT_PROTOTYPE_TOP_K
    cell_genes: CellGenes = CellGenes.MARKERS
    rank: GeneRank = GeneRank.SCALED
    max_markers: int | None = None
    """Use at most the first N markers of each type (default: all in the panel)."""
    temperature: float = DEFAULT_PROTOTYPE_TEMPERATURE
    min_confidence: float = 0.0

    def __post_init__(self):
        _set(self, "top_k", check_top_k(self.top_k))
        _set(self, "cell_genes", _enum(CellGenes, self.cell_genes, "sentence genes"))
        _set(self, "rank", _enum(GeneRank, self.rank, "gene ranking"))
        if self.max_markers is not None:
            _set(self, "max_markers", check_int(self.max_markers, "the number of markers per type"))
        _set(self, "temperature", check_positive_number(self.temperature, "the softmax temperature"))
        _set(self, "min_confidence", check_fraction(self.min_confidence, "the minimum confidence"))


def merge_options(cls, options, keywords: Mapping[str, Any], what: str):
    """``options`` or the options built from loose ``keywords`` (the former keyword API), not both."""
    if options is not None and keywords:
        raise CellamaInputError(f"give {what} either as options= or as keywords ({', '.join(sorted(keywords))}), "
                                "not both")
    if options is not None:
        if not isinstance(options, cls):
            raise CellamaInputError(f"options must be a {cls.__name__}, got {type(options).__name__}")
        return options
    try:
        return cls.from_flags(**keywords) if hasattr(cls, "from_flags") else cls(**keywords)
    except TypeError as err:  # an unknown keyword: name the accepted ones
        names = sorted(f.name for f in dataclasses.fields(cls))
        raise TypeError(f"{err}; {cls.__name__} accepts {', '.join(names)}") from None


__all__ = [
    "Clustering",
    "FinetuneOptions",
    "KMeans",
    "KNearest",
    "Leiden",
    "Neighborhood",
    "NicheOptions",
    "PrototypeOptions",
    "Radius",
    "clustering_from",
    "merge_options",
    "neighborhood_from",
]
