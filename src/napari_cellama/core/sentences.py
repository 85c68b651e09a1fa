"""Cell sentences: a cell's top-k expressed genes written as English text.

Format (CELLama, Park et al. 2026)::

    Top genes are A, B, and C.          # three or more genes (serial comma)
    Top genes are A and B.              # two genes
    Top gene is A.                      # one gene
    No genes are detected.              # a cell without any count

Optional metadata columns are appended, each as ``" {column} of this cell is {value}."``;
a missing value is written ``unknown``.

Ranking rule (documented and tested):

* genes are ranked by their value in the cell, highest first; only the within-cell
  order matters, so counts, normalised counts and log-normalised values give the
  same sentence;
* genes whose value is zero (or negative) never enter a sentence, so a cell with
  fewer than ``top_k`` detected genes gets a shorter sentence;
* ties are broken by gene symbol in ascending code-point order (``sorted()`` order),
  independently of the column order of the matrix.

Everything is vectorised over cells: the detected entries of a block of rows are
ranked by one sort of packed integer keys, and the text of all sentences is
assembled with one ``str.join`` over an object array of tokens - there is no
Python loop per cell.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._constants import DEFAULT_TOP_K, MISSING_METADATA, NO_GENES_SENTENCE, STAGE_SENTENCES
from ..validators import check_top_k
from ._progress import Progress, run
from .counts import is_raw_counts

_BLOCK = 32768  # rows ranked at once (progress granularity, bounds temporaries)


def top_genes(x, top_k: int = DEFAULT_TOP_K, gene_names: Sequence[str] | None = None):
    """Rank each row's genes and keep the top ``top_k`` detected ones.

    Parameters
    ----------
    x
        cells x genes matrix (numpy array or scipy sparse).
    top_k
        genes to keep per cell.
    gene_names
        symbols of the columns; used only to break ties alphabetically. Without
        names, ties break by column index.

    Returns
    -------
    indptr, indices
        CSR-style ragged array: the genes of cell ``i`` are column indices
        ``indices[indptr[i]:indptr[i + 1]]``, highest first.
    """
    return run(iter_top_genes(x, top_k, gene_names))


def iter_top_genes(x, top_k: int = DEFAULT_TOP_K, gene_names: Sequence[str] | None = None) -> Iterator:
    """Generator version of :func:`top_genes`, yielding ``(stage, done, total)``."""
    top_k = check_top_k(top_k)
    n, g = x.shape
    if gene_names is not None:
        if len(gene_names) != g:
            raise ValueError(f"{len(gene_names)} gene names for {g} columns")
        order = np.argsort(np.asarray(gene_names, dtype=object).astype(str), kind="stable")
    else:
        order = np.arange(g)
    rank = np.empty(g, dtype=np.uint64)  # alphabetical rank of each column
    rank[order] = np.arange(g, dtype=np.uint64)
    col_bits = max(int(g - 1).bit_length(), 1)
    if col_bits > 24:
        raise ValueError(f"too many genes ({g}) for the sentence ranking")
    block_rows = min(_BLOCK, 1 << (64 - 32 - col_bits))
    csr = sp.issparse(x) and x.format == "csr"
    counts = np.zeros(n, dtype=np.int64)
    chunks: list[np.ndarray] = []
    yield (STAGE_SENTENCES, 0, n)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = x[start:stop]
        block = block if csr else sp.csr_matrix(block.toarray() if sp.issparse(block) else np.asarray(block))
        cols, block_counts = _rank_csr(block, top_k, rank, order, col_bits)
        counts[start:stop] = block_counts
        chunks.append(cols)
        yield (STAGE_SENTENCES, stop, n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return indptr, indices


def _rank_csr(block: sp.csr_matrix, k: int, rank: np.ndarray, order: np.ndarray, col_bits: int):
    """Top-k detected columns of each row of a CSR block, by one sort of packed keys.

    Each stored entry becomes a uint64 key ``row | (~value bits) | gene rank``: for
    positive float32 values the IEEE bit pattern is monotonic, so sorting the keys
    orders every row's genes by value descending, then by gene symbol.
    """
    m = block.shape[0]
    data = np.asarray(block.data, dtype=np.float32)
    indptr = block.indptr.astype(np.int64)
    row = np.repeat(np.arange(m, dtype=np.uint64), np.diff(indptr))
    keep = data > 0
    data, row, col = data[keep], row[keep], block.indices[keep]
    inv = np.uint64(0xFFFFFFFF) - data.view(np.uint32).astype(np.uint64)
    keys = (row << np.uint64(32 + col_bits)) | (inv << np.uint64(col_bits)) | rank[col]
    keys.sort()
    row_sorted = (keys >> np.uint64(32 + col_bits)).astype(np.int64)
    per_row = np.bincount(row_sorted, minlength=m)
    first = np.zeros(m, dtype=np.int64)
    np.cumsum(per_row[:-1], out=first[1:])
    within = np.arange(len(keys)) - first[row_sorted]
    sel = within < k
    cols = order[(keys[sel] & np.uint64((1 << col_bits) - 1)).astype(np.int64)]
    return cols, np.minimum(per_row, k)


def metadata_suffixes(obs: pd.DataFrame | None, columns: Sequence[str] | None) -> np.ndarray | None:
    """Per-cell text ``" {col} of this cell is {value}."`` for each metadata column."""
    if obs is None or not columns:
        return None
    out = pd.Series("", index=obs.index, dtype=object)
    for col in columns:
        values = obs[col]
        text = values.astype(object).where(values.notna(), MISSING_METADATA).astype(str)
        text = text.replace({"nan": MISSING_METADATA, "": MISSING_METADATA, "None": MISSING_METADATA})
        out = out + f" {col} of this cell is " + text + "."
    return out.to_numpy(dtype=object)


def format_sentences(
    gene_names: Sequence[str],
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    suffixes: np.ndarray | None = None,
) -> list[str]:
    """Write the ragged top-gene arrays as sentences (vectorised, see module docstring).

    Each gene token already carries the text around it (prefix, separator or final
    period), picked from a small per-gene table by the gene's position in its
    sentence, so the whole text is one ``take`` and one ``join``.
    """
    names = [str(s) for s in gene_names]
    g = len(names)
    n = len(indptr) - 1
    counts = np.diff(indptr).astype(np.int64)
    meta = suffixes is not None
    end = "." if meta else ".\x1e"  # RS (\x1e) ends a sentence; the joined text is split on it
    # token kinds: 0 only gene, 1 first of two, 2 first of >=3, 3 middle,
    # 4 penultimate of >=3, 5 last
    table = np.array(
        [f"Top gene is {s}{end}" for s in names]
        + [f"Top genes are {s} and " for s in names]
        + [f"Top genes are {s}, " for s in names]
        + [f"{s}, " for s in names]
        + [f"{s}, and " for s in names]
        + [f"{s}{end}" for s in names],
        dtype=object,
    )
    row_of = np.repeat(np.arange(n), counts)
    j = np.arange(len(indices)) - indptr[:-1][row_of]
    n_row = counts[row_of]
    kind = np.full(len(indices), 3, dtype=np.int64)
    kind[j == n_row - 2] = 4
    kind[j == n_row - 1] = 5
    kind[(j == 0) & (n_row == 2)] = 1
    kind[(j == 0) & (n_row >= 3)] = 2
    kind[n_row == 1] = 0
    ntok = np.maximum(counts, 1) + (1 if meta else 0)
    start = np.zeros(n, dtype=np.int64)
    np.cumsum(ntok[:-1], out=start[1:])
    tokens = np.empty(int(ntok.sum()), dtype=object)
    tokens[start[row_of] + j] = table[kind * g + indices]
    empty = counts == 0
    tokens[start[empty]] = NO_GENES_SENTENCE if meta else NO_GENES_SENTENCE + "\x1e"
    if meta:
        tokens[start + ntok - 1] = (pd.Series(suffixes, dtype=object) + "\x1e").to_numpy()
    return "".join(tokens.tolist()).split("\x1e")[:-1]


def iter_cell_sentences(
    x,
    gene_names: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    *,
    obs: pd.DataFrame | None = None,
    metadata: Sequence[str] | None = None,
) -> Iterator:
    """Generator of :func:`cell_sentences`, yielding ``(stage, done, total)``."""
    indptr, indices = yield from iter_top_genes(x, top_k, gene_names)
    return format_sentences(gene_names, indptr, indices, suffixes=metadata_suffixes(obs, metadata))


def cell_sentences(
    x,
    gene_names: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    *,
    obs: pd.DataFrame | None = None,
    metadata: Sequence[str] | None = None,
) -> list[str]:
    """One CELLama sentence per row of ``x``.

    Parameters
    ----------
    x
        cells x genes matrix, dense or scipy sparse, counts or normalised.
    gene_names
        gene symbol of each column.
    top_k
        genes per sentence.
    obs, metadata
        table of per-cell metadata and the columns of it to append.
    """
    return run(iter_cell_sentences(x, gene_names, top_k, obs=obs, metadata=metadata))


def scaled_expression(x, columns: Sequence[int] | None = None) -> sp.csr_matrix:
    """Each gene's expression scaled over the cells, for ranking genes by enrichment.

    Counts are normalised to 10,000 per cell and log1p-transformed (log-normalised input
    is used as it is); each gene's detected values are then z-scored with the gene's
    mean and standard deviation over all cells (zeros included) and shifted by one
    common offset so that every detected value stays positive. Zeros stay zero - an
    undetected gene still never enters a sentence - and the within-cell order of the
    detected genes becomes "most above the gene's own average first", so a gene that is
    high everywhere (e.g. a ribosomal or housekeeping gene) no longer leads every sentence.

    ``columns``: keep only these genes (per-cell totals still use every gene). The
    scaling assumes a query of mixed cells; with a single cell there is nothing to scale
    against and the log-normalised values are returned.
    """
    from ..validators import check_matrix

    m = sp.csr_matrix(x)
    check_matrix(m, "expression matrix")
    counts = is_raw_counts(m)
    m = sp.csr_matrix(m, dtype=np.float64, copy=True)
    m.eliminate_zeros()
    n = m.shape[0]
    if counts:
        total = np.asarray(m.sum(axis=1)).ravel()
        scale = np.divide(1e4, total, out=np.zeros_like(total), where=total > 0)
    if columns is not None:
        m = m[:, np.asarray(columns, dtype=np.int64)].tocsr()
    if m.nnz == 0:
        return m.astype(np.float32)
    if counts:
        m.data *= np.repeat(scale, np.diff(m.indptr))
        np.log1p(m.data, out=m.data)
    if n < 2:
        return m.astype(np.float32)
    mean = np.asarray(m.sum(axis=0)).ravel() / n
    sq = np.asarray(m.multiply(m).sum(axis=0)).ravel() / n
    sd = np.sqrt(np.maximum(sq - mean**2, 0.0))
    sd[sd == 0] = 1.0
    z = (m.data - mean[m.indices]) / sd[m.indices]
    m.data = z - z.min() + 1.0
    return m.astype(np.float32)


def adata_sentences(adata, top_k: int = DEFAULT_TOP_K, metadata: Sequence[str] | None = None) -> list[str]:
    """Sentences for every cell of an AnnData (``adata.X``, ``adata.var_names``)."""
    return cell_sentences(adata.X, list(adata.var_names), top_k, obs=adata.obs, metadata=metadata)


__all__ = [
    "Progress",
    "adata_sentences",
    "cell_sentences",
    "format_sentences",
    "iter_cell_sentences",
    "iter_top_genes",
    "metadata_suffixes",
    "scaled_expression",
    "top_genes",
]
