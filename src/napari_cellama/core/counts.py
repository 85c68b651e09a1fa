"""The one rule for "is this matrix raw counts?", used by every step that normalises.

Sentences (:func:`~napari_cellama.core.sentences.scaled_expression`), fine-tuning
(downsampling augmentation), niche markers (:func:`~napari_cellama.core.markers.log_normalize`)
and the marker-coverage check all ask the same question and must get the same answer:
a matrix is raw counts when its stored (non-zero) values are non-negative whole numbers. A matrix with
no stored value (all zeros) is not counts: there is nothing to normalise. On large matrices
the rule looks at ``sample`` stored values spread evenly over the whole matrix (every
cell's block, not only the first cells); a log-normalised or scaled matrix has non-whole
values almost everywhere, so a sample decides it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

RAW_COUNTS_SAMPLE = 200_000
"""Stored values that :func:`is_raw_counts` inspects (evenly spaced over the matrix)."""

_WHOLE_TOL = 1e-6


def is_raw_counts(x, sample: int = RAW_COUNTS_SAMPLE) -> bool:
    """Whether ``x`` (dense or sparse, cells x genes) holds raw counts (see module docstring)."""
    if sp.issparse(x):
        data = np.asarray(x.data)
    else:
        data = np.asarray(x).ravel()
        data = data[data != 0]  # the values a sparse matrix would store
    if data.size > sample:
        data = data[np.linspace(0, data.size - 1, sample).astype(np.int64)]
    if not data.size:
        return False
    data = data.astype(np.float64, copy=False)
    return bool(np.all(data >= 0) and np.all(np.abs(data - np.round(data)) < _WHOLE_TOL))


__all__ = ["RAW_COUNTS_SAMPLE", "is_raw_counts"]
