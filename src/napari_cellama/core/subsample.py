"""Per-type capped subsampling of large references.

An atlas reference can hold hundreds of thousands of cells of a few abundant types;
embedding all of them costs time while the kNN vote mostly needs each type's
variety. :func:`subsample_reference` keeps at most ``max_per_type`` cells of every
label (all cells of rarer types), chosen uniformly at random with a fixed seed, so
rare types keep their weight and the reference shrinks to at most
``max_per_type x n_types`` cells. Its effect on accuracy is measured by
``benchmarks/bench_pipeline.py --stages subsample`` (docs/performance.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._constants import DEFAULT_RANDOM_STATE
from ..validators import check_int, check_label_key


def capped_indices(labels, max_per_type: int, random_state: int = DEFAULT_RANDOM_STATE) -> np.ndarray:
    """Sorted row positions keeping at most ``max_per_type`` rows per label (missing labels dropped)."""
    cap = check_int(max_per_type, "max cells per type")
    lab = pd.Series(pd.Categorical(np.asarray(labels, dtype=object)))
    codes = lab.cat.codes.to_numpy()
    rng = np.random.default_rng(random_state)
    # a random rank per cell, then the first `cap` cells of each label by that rank
    rank = rng.permutation(len(codes))
    order = np.lexsort((rank, codes))
    sorted_codes = codes[order]
    start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    within = np.arange(len(order)) - start
    keep = order[(within < cap) & (sorted_codes >= 0)]
    return np.sort(keep)


def subsample_reference(reference, label_key: str, max_per_type: int, *,
                        random_state: int = DEFAULT_RANDOM_STATE):
    """A copy of ``reference`` with at most ``max_per_type`` cells of each ``obs[label_key]`` value.

    Cells without a label are dropped. The choice is random but reproducible
    (``random_state``); cell order is kept.
    """
    check_label_key(reference, label_key)
    keep = capped_indices(reference.obs[label_key].to_numpy(), max_per_type, random_state)
    return reference[keep].copy()


__all__ = ["capped_indices", "subsample_reference"]
