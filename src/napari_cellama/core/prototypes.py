"""Marker-gene prototypes: reference-free annotation by the nearest marker sentence.

A *prototype* of a cell type is the embedding of its marker sentence, written exactly
like a cell sentence (:func:`napari_cellama.core.format_sentences`)::

    Top genes are CD14, LYZ, S100A8, and S100A9.

with the markers in the order the table lists them (most specific first). A cell is
assigned to the prototype whose embedding is most similar (cosine) to the embedding of
its own cell sentence.

The cell sentence for this comparison is written in the prototypes' vocabulary: by
default (``cell_genes="markers"``, ``rank="scaled"``, ``top_k=5``) it names the cell's
five marker genes that stand out most above their own average over the query cells
(z-score of log-normalised expression; undetected genes never enter). On pbmc68k this
lifts macro-F1 from 0.23 (the transfer sentence: top 20 of all genes by raw value) to
0.46 (``benchmarks/finetune_pbmc.py``, docs/finetune.md). ``cell_genes="all"``,
``rank="expression"``, ``top_k=20`` give the transfer sentence.

Marker tables (:func:`read_markers`):

* CSV / TSV with columns ``cell_type`` and ``gene`` (one row per pair; other columns,
  e.g. ``source``, are ignored; lines starting with ``#`` are comments);
* JSON ``{"cell type": ["GENE1", "GENE2", ...], ...}``;
* GMT (``name<TAB>description<TAB>gene1<TAB>gene2...``, one type per line).

Only markers measured in the query count: :func:`restrict_markers` matches symbols the
way the shared panel does (white space stripped, case-insensitive), writes them with the
query's spelling, and reports every marker it dropped; a type left without markers is
dropped and reported too.

Per cell, the result table holds (columns as in the transfer table):

* ``cell_type`` / ``transferred_type``: the nearest prototype (``cell_type`` is
  ``Unassigned`` below ``min_confidence``);
* ``confidence``: the softmax of the cosine similarities to all prototypes at
  ``temperature`` (default 0.05), taken at the winning type - 1/n_types when all
  prototypes are equally close, close to 1 when the winner stands out by several
  ``temperature`` units;
* ``distance``: ``1 - cosine`` to the winning prototype;
* ``runner_up``: the second nearest prototype;
* ``similarity_gap``: cosine to the winner minus cosine to the runner-up (the raw margin
  behind the confidence).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DEFAULT_MARKERS,
    DEFAULT_PROTOTYPE_CELL_GENES,
    DEFAULT_PROTOTYPE_RANK,
    DEFAULT_PROTOTYPE_TEMPERATURE,
    DISTANCE,
    NO_GENES_SENTENCE,
    PROTOTYPE_CELL_GENES,
    PROTOTYPE_GENES_MARKERS,
    PROTOTYPE_RANKS,
    RANK_SCALED,
    RUNNER_UP,
    SENTENCE,
    SIMILARITY_GAP,
    STAGE_EMBED_PROTOTYPES,
    STAGE_EMBED_QUERY,
    STAGE_PROTOTYPES,
    TRANSFERRED_TYPE,
)
from ..validators import CellamaInputError, check_choice, check_file, check_positive_number, check_unique_ids
from ._progress import run
from .embed import Embedder
from .embedding_options import make_embedder
from .options import PrototypeOptions, merge_options
from .panel import normalise_symbol
from .sentences import format_sentences, iter_cell_sentences, scaled_expression
from .transfer import apply_threshold, l2_normalise, unassign_cells

MARKER_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".gmt")


# --------------------------------------------------------------------------- reading
def default_markers_path() -> Path:
    """The marker table shipped with the package (``napari_cellama/data/markers_default.csv``)."""
    from importlib.resources import files

    return Path(str(files("napari_cellama.data").joinpath("markers_default.csv")))


def _clean(genes) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for g in genes:
        if g is None or (isinstance(g, float) and np.isnan(g)):
            continue
        s = str(g).strip()
        if s and s.upper() not in seen:
            seen.add(s.upper())
            out.append(s)
    return out


def _read_table(path: Path) -> dict[str, list[str]]:
    sep = "\t" if path.name.lower().endswith((".tsv", ".txt")) else ","
    try:
        df = pd.read_csv(path, sep=sep, comment="#", dtype=str, skip_blank_lines=True)
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(f"marker table {path} could not be read ({type(err).__name__}: {err})") from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "cell_type" not in cols or "gene" not in cols:
        raise CellamaInputError(
            f"marker table {path} needs columns cell_type and gene (found: {', '.join(map(str, df.columns[:10]))}); "
            "write one row per cell type and marker gene"
        )
    df = df[[cols["cell_type"], cols["gene"]]].dropna()
    out: dict[str, list[str]] = {}
    for ct, gene in zip(df.iloc[:, 0].str.strip(), df.iloc[:, 1]):
        if ct:
            out.setdefault(ct, []).append(gene)
    return {k: _clean(v) for k, v in out.items()}


def _read_json(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except Exception as err:  # noqa: BLE001
        raise CellamaInputError(f"marker file {path} is not valid JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, (list, tuple)) for v in data.values()):
        raise CellamaInputError(
            f"marker file {path} must hold one JSON object {{\"cell type\": [\"GENE1\", \"GENE2\"], ...}}"
        )
    return {str(k).strip(): _clean(v) for k, v in data.items() if str(k).strip()}


def _read_gmt(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise CellamaInputError(
                f"{path} line {n} is not GMT (name<TAB>description<TAB>gene1<TAB>...); use tabs between fields"
            )
        out.setdefault(parts[0].strip(), []).extend(parts[2:])
    return {k: _clean(v) for k, v in out.items() if k}


def read_markers(path: str | os.PathLike | None) -> dict[str, list[str]]:
    """Read a marker table (CSV/TSV, JSON or GMT; see module docstring).

    ``None`` or ``"default"`` reads the table shipped with the package. Returns
    ``{cell type: [genes]}`` in file order, duplicate genes of a type removed.
    """
    if path is None or str(path).strip().lower() == DEFAULT_MARKERS:
        path = default_markers_path()
    p = check_file(path, "marker file", suffixes=MARKER_SUFFIXES)
    if p.is_dir():
        raise CellamaInputError(f"marker file {p} is a folder; give a .csv, .json or .gmt file")
    name = p.name.lower()
    markers = _read_json(p) if name.endswith(".json") else _read_gmt(p) if name.endswith(".gmt") else _read_table(p)
    markers = {k: v for k, v in markers.items() if v}
    if not markers:
        raise CellamaInputError(f"marker file {p} lists no cell type with marker genes")
    return markers


# --------------------------------------------------------------------------- panel
@dataclass
class MarkerSet:
    """Markers restricted to the genes of a panel, with what was dropped."""

    markers: dict[str, list[str]]
    """Cell type -> markers measured in the panel (panel spelling, table order)."""
    dropped: dict[str, list[str]] = field(default_factory=dict)
    """Cell type -> markers not in the panel."""
    empty_types: list[str] = field(default_factory=list)
    """Types dropped because none of their markers is in the panel."""
    n_panel_genes: int = 0

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    @property
    def n_kept(self) -> int:
        return sum(len(v) for v in self.markers.values())

    def summary(self) -> str:
        lines = [
            (f"marker prototypes: {len(self.markers)} cell types, {self.n_kept} markers in the panel "
             f"({self.n_panel_genes} genes); {self.n_dropped} markers not in the panel were dropped")
        ]
        for ct, genes in self.dropped.items():
            if genes:
                lines.append(f"  {ct}: dropped {', '.join(genes)}")
        if self.empty_types:
            lines.append(f"  types without any marker in the panel (no prototype): {', '.join(self.empty_types)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "markers": self.markers,
            "dropped": self.dropped,
            "empty_types": self.empty_types,
            "n_panel_genes": self.n_panel_genes,
        }


def restrict_markers(markers: Mapping[str, Sequence[str]], genes: Sequence[str]) -> MarkerSet:
    """Keep the markers measured in ``genes`` (case-insensitive), written in ``genes``' spelling."""
    keys = normalise_symbol(genes)
    spelling = pd.Series([str(g).strip() for g in genes], index=keys)
    spelling = spelling[~spelling.index.duplicated()]
    kept: dict[str, list[str]] = {}
    dropped: dict[str, list[str]] = {}
    empty: list[str] = []
    for ct, marker_genes in markers.items():
        marker_genes = _clean(marker_genes)
        mk = normalise_symbol(marker_genes)
        inside = mk.isin(spelling.index)
        dropped[ct] = [g for g, ok in zip(marker_genes, inside) if not ok]
        present = [spelling[k] for k, ok in zip(mk, inside) if ok]
        if present:
            kept[ct] = present
        else:
            empty.append(ct)
    if not kept:
        raise CellamaInputError(
            f"none of the {sum(len(v) for v in markers.values())} marker genes is measured in the query "
            f"({len(spelling)} genes); check the species and that both use gene symbols"
        )
    return MarkerSet(kept, dropped, empty, len(spelling))


def marker_sentences(markers: Mapping[str, Sequence[str]], max_markers: int | None = None) -> dict[str, str]:
    """Prototype sentence of each type, formatted exactly like a cell sentence."""
    types = list(markers)
    lists = [list(markers[t])[: max_markers or None] for t in types]
    vocab = list(dict.fromkeys(g for genes in lists for g in genes))
    pos = {g: i for i, g in enumerate(vocab)}
    counts = np.array([len(genes) for genes in lists], dtype=np.int64)
    indptr = np.zeros(len(types) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.array([pos[g] for genes in lists for g in genes], dtype=np.int64)
    return dict(zip(types, format_sentences(vocab, indptr, indices)))


# --------------------------------------------------------------------------- annotation
@dataclass
class PrototypeResult:
    """Reference-free annotation of a query by marker prototypes."""

    table: pd.DataFrame
    """One row per query cell (index cell id): cell_type, transferred_type, confidence,
    distance, runner_up, similarity_gap, sentence."""
    similarities: np.ndarray
    """``(n_cells, n_types)`` cosine similarity of each cell to each prototype."""
    types: list[str]
    prototype_sentences: dict[str, str]
    prototype_embeddings: np.ndarray
    query_embeddings: np.ndarray
    marker_set: MarkerSet
    params: dict = field(default_factory=dict)
    options: PrototypeOptions | None = None
    """The options of the run (``options.to_dict()`` for JSON / ``uns``)."""

    def unassigned_note(self) -> str:
        """``"N cells without any detected marker gene: Unassigned"``, or ``""`` when every cell
        had a sentence gene."""
        n = int(self.params.get("n_cells_without_sentence_genes", 0))
        if not n:
            return ""
        what = "marker gene" if self.params.get("cell_genes") == PROTOTYPE_GENES_MARKERS else "gene"
        return f"{n} cells without any detected {what}: Unassigned"


def assign_to_prototypes(
    cell_embeddings: np.ndarray,
    prototype_embeddings: np.ndarray,
    types: Sequence[str],
    temperature: float = DEFAULT_PROTOTYPE_TEMPERATURE,
    index=None,
    min_confidence: float = 0.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Nearest prototype of every cell; returns the table and the similarity matrix."""
    temperature = check_positive_number(temperature, "the prototype temperature")
    types = [str(t) for t in types]
    if len(types) != len(prototype_embeddings):
        raise CellamaInputError(f"{len(types)} type names for {len(prototype_embeddings)} prototypes")
    sim = l2_normalise(cell_embeddings) @ l2_normalise(prototype_embeddings).T
    n, c = sim.shape
    order = np.argsort(-sim, axis=1, kind="stable")
    best = order[:, 0]
    s1 = sim[np.arange(n), best]
    logits = (sim - s1[:, None]) / temperature  # max-shifted, stable
    prob = np.exp(logits)
    conf = 1.0 / prob.sum(axis=1)  # softmax at the winner (its shifted logit is 0)
    names = np.asarray(types + [""], dtype=object)
    if c > 1:
        second = order[:, 1]
        gap = s1 - sim[np.arange(n), second]
    else:
        second = np.full(n, -1)
        gap = np.zeros(n, dtype=np.float32)
    table = pd.DataFrame(
        {
            TRANSFERRED_TYPE: names[best],
            CONFIDENCE: conf.astype(np.float32),
            DISTANCE: np.clip(1.0 - s1, 0.0, 2.0).astype(np.float32),
            RUNNER_UP: names[second],
            SIMILARITY_GAP: gap.astype(np.float32),
        },
        index=pd.Index(index if index is not None else np.arange(n)),
    )
    table.insert(0, CELL_TYPE, apply_threshold(table, min_confidence))
    return table, sim


def prototype_cell_matrix(x, genes: Sequence[str], markers: Mapping[str, Sequence[str]] | None = None,
                          cell_genes: str = DEFAULT_PROTOTYPE_CELL_GENES,
                          rank: str = DEFAULT_PROTOTYPE_RANK):
    """The matrix and gene names that cell sentences for prototype annotation are built from.

    ``cell_genes="markers"`` keeps the columns of the genes in ``markers`` (matched like the
    shared panel: white space stripped, case-insensitive; a gene measured twice counts
    once); ``rank="scaled"`` ranks by :func:`~napari_cellama.core.scaled_expression`
    (normalised over all genes of the cell, scaled over all cells).
    """
    cell_genes = check_choice(cell_genes, PROTOTYPE_CELL_GENES, "sentence genes")
    rank = check_choice(rank, PROTOTYPE_RANKS, "gene ranking")
    genes = [str(g) for g in genes]
    keys = normalise_symbol(genes)
    if cell_genes == PROTOTYPE_GENES_MARKERS:
        wanted = set(normalise_symbol([g for ms in (markers or {}).values() for g in ms]))
        first = ~keys.duplicated()
        cols = [i for i, k in enumerate(keys) if k in wanted and first[i]]
        if not cols:
            raise CellamaInputError("no marker gene is measured in the query; use cell genes 'all' or another "
                                    "marker table")
    else:
        cols = list(range(len(genes)))
    if rank == RANK_SCALED:
        return scaled_expression(x, cols), [genes[i] for i in cols]
    if len(cols) == len(genes):  # all genes by value: the matrix as it is, no copy
        return x, genes
    import scipy.sparse as sp

    return (sp.csr_matrix(x)[:, cols] if sp.issparse(x) else np.asarray(x)[:, cols]), [genes[i] for i in cols]


def iter_prototype_annotation(
    query,
    markers: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    options: PrototypeOptions | None = None,
    *,
    model=None,
    embedder: Embedder | None = None,
    device: str = "auto",
    **keywords,
) -> Iterator:
    """Generator of :func:`annotate_by_prototypes`; returns a :class:`PrototypeResult`.

    ``options``: a :class:`~napari_cellama.core.options.PrototypeOptions`; instead, its fields
    (``top_k``, ``cell_genes``, ``rank``, ``max_markers``, ``temperature``, ``min_confidence``)
    may be given as keywords.
    """
    options = merge_options(PrototypeOptions, options, keywords, "the prototype options")
    top_k, cell_genes, rank = options.top_k, options.cell_genes.value, options.rank.value
    max_markers, temperature, min_confidence = options.max_markers, options.temperature, options.min_confidence
    check_unique_ids(query.obs_names, "query")
    if markers is None or isinstance(markers, (str, os.PathLike)):
        markers = read_markers(markers)
    genes = [str(g) for g in query.var_names]
    marker_set = restrict_markers(markers, genes)
    used = {t: list(g)[: max_markers or None] for t, g in marker_set.markers.items()}
    sentences_by_type = marker_sentences(used)
    types = list(sentences_by_type)
    x, x_genes = prototype_cell_matrix(query.X, genes, used, cell_genes, rank)
    cell_text = yield from iter_cell_sentences(x, x_genes, top_k)
    embedder = embedder or make_embedder(model=model, device=device)
    proto = yield from embedder.iter_encode(list(sentences_by_type.values()), STAGE_EMBED_PROTOTYPES)
    emb = yield from embedder.iter_encode(cell_text, STAGE_EMBED_QUERY)
    yield (STAGE_PROTOTYPES, 0, 1)
    table, sim = assign_to_prototypes(emb, proto, types, temperature, query.obs_names, min_confidence)
    table.index.name = CELL_ID
    table[SENTENCE] = cell_text
    # a cell without any detected sentence gene (with cell_genes="markers": no marker at all)
    # carries no evidence for any type: Unassigned, confidence 0, not the nearest prototype
    # of the empty sentence
    blank = (table[SENTENCE] == NO_GENES_SENTENCE).to_numpy()
    unassign_cells(table, blank)
    if blank.any():
        table.loc[blank, SIMILARITY_GAP] = 0.0
        table.loc[blank, DISTANCE] = np.nan
    yield (STAGE_PROTOTYPES, 1, 1)
    params = {
        "top_k": top_k,
        "model": embedder.model_id,
        "device": embedder.device,
        "temperature": float(temperature),
        "max_markers": max_markers,
        "cell_genes": cell_genes,
        "rank": rank,
        "n_sentence_genes": len(x_genes),
        "min_confidence": float(min_confidence),
        "n_types": len(types),
        "n_cells_without_sentence_genes": int(blank.sum()),
    }
    return PrototypeResult(table, sim, types, sentences_by_type, proto, emb, marker_set, params, options)


def annotate_by_prototypes(query, markers=None, options: PrototypeOptions | None = None, *, callback=None,
                           **kwargs) -> PrototypeResult:
    """Assign every query cell to the nearest marker prototype (reference-free).

    Parameters
    ----------
    query
        AnnData (cells x genes; counts or log-normalised - only the within-cell order
        of genes matters).
    markers
        ``{type: [genes]}``, a marker file (CSV/JSON/GMT) or ``None`` / ``"default"`` for
        the shipped table.
    options
        a :class:`~napari_cellama.core.options.PrototypeOptions`: ``top_k`` genes per cell
        sentence (default 5: marker sentences are short too); ``cell_genes`` ``"markers"``
        (default: a cell's sentence names only marker genes of the table, i.e. the
        prototypes' own vocabulary) or ``"all"`` (any gene of the panel, like the transfer
        sentence); ``rank`` ``"scaled"`` (default: genes ordered by expression relative to
        their mean over all query cells, :func:`napari_cellama.core.scaled_expression`) or
        ``"expression"`` (by the value itself); ``max_markers``, ``temperature``,
        ``min_confidence``. Its fields may instead be given as keywords.
    callback
        ``callback(stage, done, total)``.

    Other keyword arguments: ``model`` (sentence-transformers name or folder, e.g. a
    fine-tuned model; default the offline all-MiniLM-L6-v2), ``embedder``, ``device``.
    """
    return run(iter_prototype_annotation(query, markers, options, **kwargs), callback)


__all__ = [
    "MarkerSet",
    "PrototypeResult",
    "annotate_by_prototypes",
    "assign_to_prototypes",
    "default_markers_path",
    "iter_prototype_annotation",
    "marker_sentences",
    "prototype_cell_matrix",
    "read_markers",
    "restrict_markers",
]
