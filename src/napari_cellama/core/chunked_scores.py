"""Per-cell expression features and unknown scores of a million cells in bounded memory (issue 15).

The unknown score (:mod:`.unknown`) sees every query cell's standardised expression
(:func:`~.classify.expression_features`: log-normalised, each gene z-scored over the query)
and its sentence embedding. Written out for all cells at once that is a dense
``cells x genes`` float32 matrix (1.8 GB for 1M cells on a 458-gene panel, and up to three
times that while it is computed) plus one embedding row per *cell* (1.5 GB, and again as unit
rows). Here the same numbers are computed

* gene statistics (mean, standard deviation) from the log-normalised counts in blocks of
  genes (each block dense over all cells: the same per-gene reductions as on the whole matrix);
* features, their projection and the scores in blocks of cells;
* embedding rows kept once per *distinct sentence* and indexed per cell within a block
  (:meth:`~.unknown.UnknownCalibration.scores` itself runs on each block).

The results equal those of :func:`~.classify.expression_features` and
:meth:`~.unknown.UnknownCalibration.scores` on the whole matrices
(``tests/test_chunked_scores.py``); only the peak memory differs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .classify import _CLIP  # the clip of classify.standardise, whose numbers these blocks reproduce

ROW_BLOCK = 32768
"""Cells per block (a block's dense features: 32,768 x 458 float32 = 60 MB)."""

GENE_BLOCK = 32
"""Genes per block of the gene statistics (1M cells x 32 genes float32 = 128 MB)."""

class ExpressionFeatures:
    """Standardised log-normalised expression of ``counts`` (cells x shared genes), row block by row block.

    ``block(start, stop)`` equals ``expression_features(counts)[start:stop]``.
    """

    def __init__(self, counts):
        from .classify import log_normalise

        self.lognorm = sp.csr_matrix(log_normalise(counts))
        self.n_cells, n_genes = self.lognorm.shape
        self.mean = np.zeros(n_genes, dtype=np.float32)
        self.sd = np.ones(n_genes, dtype=np.float32)
        csc = self.lognorm.tocsc()
        for j in range(0, n_genes, GENE_BLOCK):
            # C order, as the whole dense matrix: numpy then reduces each column in the same order
            d = np.ascontiguousarray(csc[:, j:j + GENE_BLOCK].toarray(), dtype=np.float32)
            self.mean[j:j + d.shape[1]] = d.mean(axis=0)
            self.sd[j:j + d.shape[1]] = d.std(axis=0)
        del csc
        self.sd[self.sd == 0] = 1.0

    def block(self, start: int, stop: int) -> np.ndarray:
        d = self.lognorm[start:stop].toarray().astype(np.float32, copy=False)
        return np.clip((d - self.mean) / self.sd, -_CLIP, _CLIP)

    def blocks(self, size: int = ROW_BLOCK):
        """``(start, stop, features)`` of consecutive row blocks."""
        for start in range(0, self.n_cells, size):
            stop = min(start + size, self.n_cells)
            yield start, stop, self.block(start, stop)


def projected_expression(calibration, counts) -> np.ndarray:
    """``calibration.project(expression_features(counts))`` (``cells x PCs`` unit rows), in row blocks."""
    feats = ExpressionFeatures(counts)
    out = np.empty((feats.n_cells, calibration.components.shape[0]), dtype=np.float32)
    for start, stop, f in feats.blocks():
        out[start:stop] = calibration.project(f)
    return out


def cell_unknown_scores(calibration, query, predicted) -> np.ndarray:
    """``calibration.scores(expression_features(query.counts), query.per_cell_embeddings(), predicted)``
    in row blocks: per cell the mean of its expression and embedding conformal scores for its
    ``predicted`` type (float32; see :class:`~.unknown.UnknownCalibration`)."""
    predicted = np.asarray(predicted, dtype=object)
    feats = ExpressionFeatures(query.counts)
    emb, codes = np.asarray(query.embeddings), query.sentence_codes
    out = np.empty(feats.n_cells, dtype=np.float32)
    for start, stop, f in feats.blocks():
        e = emb[start:stop] if codes is None else emb[codes[start:stop]]
        out[start:stop] = calibration.scores(f, e, predicted[start:stop])
    return out


__all__ = ["ExpressionFeatures", "cell_unknown_scores", "projected_expression"]
