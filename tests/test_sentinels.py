"""Reference labels vs the tool's own labels (issue 13 item 8).

Empty strings (and ``nan``/``None`` written as text) are missing labels; a reference label
equal to a sentinel (``Unassigned``, ``Unknown``) is renamed ``<label> (reference)`` so a
transferred ``Unassigned`` always means "no confident match". See docs/reliability.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _hash_embedder import HashEmbedder

from napari_cellama._constants import CELL_TYPE, TRANSFERRED_TYPE, UNASSIGNED
from napari_cellama.core import Annotation, run_transfer
from napari_cellama.io import write_cells_csv, write_explorer_csv, write_h5ad
from napari_cellama.io.readers import SENTINEL_SUFFIX, LabelWarning, clean_labels
from napari_cellama.validators import CellamaInputError


@pytest.fixture(scope="module")
def pbmc():
    a = sc.datasets.pbmc68k_reduced()
    x = a.raw.to_adata()
    x.obs["label"] = a.obs["bulk_labels"].astype(str).to_numpy()
    return x


def _transfer(pbmc, labels):
    ref, query = pbmc[:120].copy(), pbmc[120:160].copy()
    ref.obs["label"] = labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_transfer(query, ref, "label", embedder=HashEmbedder(), k=1)
    return result, [w for w in caught if issubclass(w.category, LabelWarning)]


def test_empty_string_labels_are_missing_and_every_export_works(tmp_path, pbmc):
    """Item 8: empty-string labels crashed every export (KeyError: "type '' is not registered")."""
    labels = pbmc.obs["label"].to_numpy()[:120].copy()
    labels[::2] = ""  # half the reference without a label, written as empty text
    labels[1::4] = "  "
    result, caught = _transfer(pbmc, labels)
    assert "" not in set(result.table[CELL_TYPE]) and "" not in set(result.table[TRANSFERRED_TYPE])
    assert caught and "unlabelled" in str(caught[0].message)
    ann = Annotation(result.table)
    write_cells_csv(tmp_path / "c.csv", ann)
    write_explorer_csv(tmp_path / "e.csv", ann)
    write_h5ad(tmp_path / "c.h5ad", ann, result)
    assert pd.read_csv(tmp_path / "e.csv")["group"].notna().all()


@pytest.mark.parametrize("sentinel", [UNASSIGNED, "unassigned", "Unknown"])
def test_reference_labels_equal_to_sentinels_stay_apart(pbmc, sentinel):
    """Item 8: a reference type called Unassigned was indistinguishable from the tool's Unassigned."""
    labels = np.where(np.arange(120) % 3 == 0, sentinel, "T cell").astype(object)
    result, caught = _transfer(pbmc, labels)
    got = set(result.table[TRANSFERRED_TYPE])
    assert sentinel + SENTINEL_SUFFIX in got and sentinel not in got
    assert any("renamed" in str(w.message) for w in caught)


def test_clean_labels_rules():
    s = pd.Series(["B", "", " ", "nan", "None", "NaN", None, np.nan, "Unassigned", "Unknown", "NK"])
    out, changes = clean_labels(s)
    assert out.iloc[:8].tolist()[0] == "B" and out.iloc[1:8].isna().all()
    assert out.iloc[8] == "Unassigned (reference)" and out.iloc[9] == "Unknown (reference)"
    assert out.iloc[10] == "NK" and changes["missing"] == 5 and changes["renamed"] == ["Unassigned", "Unknown"]


def test_only_empty_labels_is_a_clear_error(pbmc):
    with pytest.raises(CellamaInputError, match="no values"):
        _transfer(pbmc, np.array([""] * 120, dtype=object))
