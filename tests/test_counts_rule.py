"""One "raw counts?" rule for sentences, fine-tuning, niche markers and marker coverage."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_cellama.core import is_raw_counts
from napari_cellama.core.counts import RAW_COUNTS_SAMPLE
from napari_cellama.core.markers import log_normalize

# matrices on which the three former rules disagreed
BINARY = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1]], dtype=np.float32)  # low-depth counts
NEGATIVE_WHOLE = np.array([[0, -1, 2], [1, 0, -2], [2, 1, 0]], dtype=np.float32)  # scaled, rounded


def _late_fraction():
    """Whole numbers in the first RAW_COUNTS_SAMPLE stored values, fractions after them."""
    n = RAW_COUNTS_SAMPLE * 2
    data = np.ones(n, dtype=np.float32)
    data[RAW_COUNTS_SAMPLE:] = 0.5
    return sp.csr_matrix((data, np.zeros(n, dtype=np.int64), np.arange(n + 1)), shape=(n, 1))


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (np.array([[0, 3], [12, 0]]), True),
        (BINARY, True),
        (sp.csr_matrix(BINARY), True),
        (np.log1p(BINARY), False),
        (NEGATIVE_WHOLE, False),
        (np.zeros((3, 2)), False),
        (sp.csr_matrix((3, 2)), False),
        (_late_fraction(), False),
    ],
)
def test_rule(x, expected):
    assert is_raw_counts(x) is expected
    assert is_raw_counts(sp.csr_matrix(x)) is expected  # dense and sparse agree


def test_sentences_and_niche_normalise_the_same_inputs():
    """Counts are normalised by both steps; log-normalised input is used as it is by both."""
    for x in (BINARY, np.log1p(BINARY * 3)):
        counts = is_raw_counts(x)
        niche_changed = not np.allclose(log_normalize(x).toarray(), x)
        assert niche_changed is counts
