"""The review state (threshold, manual edits, undo/redo, colours, filters) on a real transfer.

The transfer is the real engine (offline MiniLM) from the demo's reference (at most 25
cells per type) to 150 cells of the demo's Xenium run (``_transfer_fixture``); the Labels
raster is that run's own ``cells.zarr.zip`` mask read by spatialdata-io.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pandas as pd
import pytest
from _transfer_fixture import cellama_tmp, transfer  # noqa: F401 - pytest fixtures

from napari_cellama._constants import (
    CELL_ID,
    CELL_TYPE,
    CONFIDENCE,
    DISTANCE,
    LABEL_ID,
    NICHE_CLUSTER,
    REASON_UNKNOWN,
    SOURCE,
    SOURCE_MANUAL,
    SOURCE_TRANSFERRED,
    TRANSFERRED_TYPE,
    UNASSIGNED,
    UNASSIGNED_COLOR,
    UNASSIGNED_REASON,
    UNKNOWN,
)
from napari_cellama.core import Annotation, apply_threshold, palette_color, to_hex, to_rgba
from napari_cellama.validators import CellamaInputError


@pytest.fixture(scope="module")
def raster(transfer):
    """The run's cell Labels raster and each cell's label id (spatialdata-io's cell_labels)."""
    from napari_cellama.io import read_xenium

    _, _, paths = transfer
    sd = read_xenium(paths["xenium"], labels=True, image=False)
    labels = np.asarray(sd.labels["cell_labels"]["scale0"]["image"])
    t = sd.tables["table"]
    ids = pd.Series(t.obs["cell_labels"].to_numpy(), index=t.obs["cell_id"].astype(str).to_numpy())
    return labels, ids


@pytest.fixture
def ann(transfer, raster):
    result, _, _ = transfer
    return Annotation(result.table, label_ids=raster[1])


def _low_and_high(ann, threshold):
    conf = ann.table[CONFIDENCE].to_numpy()
    return np.flatnonzero(conf < threshold), np.flatnonzero(conf >= threshold)


def test_transfer_recovers_the_planted_truth(transfer):
    result, _, paths = transfer
    truth = paths["truth"]["cell_type"].reindex(result.table.index).astype(str)
    accuracy = float((result.table[CELL_TYPE].astype(str) == truth).mean())
    print(f"accuracy on {len(truth)} demo cells against the planted truth: {accuracy:.3f}")
    majority = float(truth.value_counts(normalize=True).iloc[0])
    assert accuracy > majority + 0.2  # far above always answering the commonest type


def _called(table: pd.DataFrame) -> pd.Series:
    """The transfer's call per cell: its transferred type, or Unknown where the transfer said so."""
    unknown = table[UNASSIGNED_REASON].astype(str) == REASON_UNKNOWN
    return table[TRANSFERRED_TYPE].astype(str).where(~unknown, UNKNOWN)


def test_initial_labels_are_the_transfer(transfer, ann):
    result, _, _ = transfer
    assert ann.n_cells == len(result.table) == 150
    assert list(ann.cell_ids) == list(result.table.index.astype(str))
    np.testing.assert_array_equal(ann.cell_type.astype(str), _called(result.table))
    assert (ann.source == SOURCE_TRANSFERRED).all()
    assert set(ann.types) >= set(result.table[TRANSFERRED_TYPE])
    assert ann.categories[0] == UNASSIGNED
    t = ann.table
    assert list(t.columns[:2]) == [CELL_TYPE, SOURCE]
    for col in (TRANSFERRED_TYPE, CONFIDENCE, DISTANCE, "runner_up", "nearest_reference", "sentence", LABEL_ID):
        assert col in t


def test_threshold_relabels_live_like_apply_threshold(transfer, ann):
    result, _, _ = transfer
    unique_c = np.unique(result.table[CONFIDENCE].to_numpy())
    thr = float(unique_c[len(unique_c) // 2])
    ann.set_threshold(min_confidence=thr)
    expected = apply_threshold(result.table, thr)
    np.testing.assert_array_equal(ann.cell_type.astype(str).to_numpy(), expected.astype(str).to_numpy())
    low, high = _low_and_high(ann, thr)
    assert len(low) > 0 and len(high) > 0
    assert (ann.cell_type.iloc[low] == UNASSIGNED).all()

    unique_d = np.unique(result.table[DISTANCE].to_numpy())  # sentences repeat: few distinct values
    dmax = float(unique_d[len(unique_d) // 2])
    ann.set_threshold(0.0, max_distance=dmax)
    far = result.table[DISTANCE].to_numpy() > dmax
    assert far.any()
    assert (ann.cell_type[far] == UNASSIGNED).all()
    assert (ann.cell_type[~far].astype(str) == _called(result.table)[~far]).all()

    ann.set_threshold(0.0, None)  # back to no threshold: the transferred labels again
    np.testing.assert_array_equal(ann.cell_type.astype(str), _called(result.table))
    with pytest.raises(CellamaInputError):
        ann.set_threshold(1.5)
    with pytest.raises(CellamaInputError):
        ann.set_threshold(0.2, -1)


def test_manual_labels_survive_threshold_changes(transfer, ann):
    result, _, _ = transfer
    unique_c = np.unique(result.table[CONFIDENCE].to_numpy())
    thr = float(unique_c[len(unique_c) // 2])
    low, _ = _low_and_high(ann, thr)
    assert len(low) >= 8
    chosen = ann.cell_ids[low[:5]]
    existing = ann.types[0]
    ann.assign(chosen, existing)
    ann.assign(ann.cell_ids[low[5:8]], "  Osteoblast  ")  # a new name, stripped
    assert "Osteoblast" in ann.types
    for m, c in ((0.0, None), (thr, None), (0.99, 0.01), (0.0, None)):
        ann.set_threshold(m, c)
        assert (ann.cell_type[chosen] == existing).all()
        assert (ann.source[chosen] == SOURCE_MANUAL).all()
        assert (ann.cell_type.iloc[low[5:8]] == "Osteoblast").all()
    assert int(ann.manual_mask.sum()) == 8
    assert (ann.source == SOURCE_MANUAL).sum() == 8
    # cells manually set to Unassigned stay so even without a threshold
    ann.assign(ann.cell_ids[-1:], UNASSIGNED)
    assert ann.cell_type.iloc[-1] == UNASSIGNED and ann.source.iloc[-1] == SOURCE_MANUAL
    # clearing a manual label returns the transferred one
    ann.clear_manual(chosen)
    np.testing.assert_array_equal(ann.cell_type[chosen].astype(str),
                                  result.table.loc[chosen, TRANSFERRED_TYPE].astype(str))
    assert (ann.source[chosen] == SOURCE_TRANSFERRED).all()


def test_undo_redo_25_edits(ann):
    rng = np.random.default_rng(1)
    names = ann.types + ["Osteoclast", "Adipocyte", "Stromal"]
    states = [ann.table[[CELL_TYPE, SOURCE]].astype(str).copy()]
    for i in range(25):
        cells = ann.cell_ids[rng.choice(ann.n_cells, size=int(rng.integers(1, 12)), replace=False)]
        if i % 6 == 5:
            edit = ann.clear_manual(ann.cell_ids[ann.manual_mask][:3])
        else:
            edit = ann.assign(cells, names[i % len(names)])
        if edit is None:  # no change: nothing recorded; make a sure change instead
            edit = ann.assign(ann.cell_ids[i:i + 1], f"type {i}")
        assert edit is not None
        states.append(ann.table[[CELL_TYPE, SOURCE]].astype(str).copy())
    assert ann.n_undo == 25 and not ann.can_redo
    for k in range(25, 0, -1):
        assert ann.undo() is not None
        pd.testing.assert_frame_equal(ann.table[[CELL_TYPE, SOURCE]].astype(str), states[k - 1])
    assert ann.undo() is None and not ann.can_undo
    assert (ann.source == SOURCE_TRANSFERRED).all()
    for k in range(1, 26):
        assert ann.redo() is not None
        pd.testing.assert_frame_equal(ann.table[[CELL_TYPE, SOURCE]].astype(str), states[k])
    assert ann.redo() is None
    # a new edit after undo drops the redo stack
    ann.undo()
    ann.undo()
    assert ann.n_redo == 2
    ann.assign(ann.cell_ids[:2], "Megakaryocyte")
    assert ann.n_redo == 0 and not ann.can_redo


def test_undo_depth_is_bounded(transfer):
    result, _, _ = transfer
    with pytest.raises(CellamaInputError):
        Annotation(result.table, max_history=5)
    a = Annotation(result.table, max_history=20)
    for i in range(25):
        a.assign(a.cell_ids[i:i + 1], f"edited {i}")
    assert a.n_undo == 20
    while a.undo():
        pass
    # the 5 oldest edits are beyond the undo depth and stay
    assert int(a.manual_mask.sum()) == 5
    assert list(a.cell_type.iloc[:5]) == [f"edited {i}" for i in range(5)]


def test_colours_are_stable_deterministic_and_grey_for_unassigned(transfer):
    result, _, _ = transfer
    a, b = Annotation(result.table), Annotation(result.table)
    assert a.colors == b.colors
    assert a.hex_colors[UNASSIGNED] == UNASSIGNED_COLOR
    before = a.colors
    a.assign(a.cell_ids[:3], "Brand new type")
    a.add_type("Another new type")
    after = a.colors
    assert {k: after[k] for k in before} == before  # adding types changes no colour
    assert after["Brand new type"] not in before.values()
    assert len({tuple(np.round(c, 4)) for c in after.values()}) == len(after)
    # a saved colour map wins and keeps its order
    restored = Annotation(result.table, colors={t: "#123456" for t in a.types[:1]})
    assert restored.hex_colors[a.types[0]] == "#123456"
    assert restored.types[0] == a.types[0]


def test_palette_is_distinct_and_never_grey():
    cols = [palette_color(i) for i in range(300)]
    assert len({to_hex(c) for c in cols}) == 300
    for c in cols:
        _, s, v = colorsys.rgb_to_hsv(*c[:3])
        assert s > 0.2 and v > 0.25  # saturated enough not to look Unassigned
    assert to_rgba("#ff000080") == pytest.approx((1.0, 0.0, 0.0, 128 / 255))
    with pytest.raises(CellamaInputError):
        to_rgba("#zzzzzz")


def _label_rgba(ann) -> np.ndarray:
    """RGBA per Labels id as napari paints an annotation layer: type code per label
    (``label_code_lut``) through the per-type colormap (``type_color_dict``)."""
    colors = ann.type_color_dict()
    table = np.zeros((len(ann.categories) + 1, 4), dtype=np.float32)
    for code, rgba in colors.items():
        if code is not None:
            table[code] = rgba
    return table[ann.label_code_lut()]


def test_label_lookup_paints_the_real_raster(ann, raster):
    labels, ids = raster
    lut = _label_rgba(ann)
    assert lut.shape == (int(ids.max()) + 1, 4) and lut.dtype == np.float32
    assert (lut[0] == 0).all()  # background transparent
    painted = lut[labels]
    assert painted.shape == labels.shape + (4,)
    for pos in range(0, ann.n_cells, 17):
        lab = ann.label_ids[pos]
        mask = labels == lab
        assert mask.any()
        assert np.allclose(painted[mask], ann.color_of(ann.cell_type.iloc[pos]))
    assert (painted[labels == 0] == 0).all()

    # hide one type: exactly its pixels become transparent
    counts = ann.counts()
    hidden_type = counts.index[counts.argmax()]
    ann.set_visible(hidden_type, False)
    lut2 = _label_rgba(ann)
    hidden_cells = ann.label_ids[(ann.cell_type == hidden_type).to_numpy()]
    assert (lut2[hidden_cells, 3] == 0).all()
    others = np.setdiff1d(ann.label_ids, hidden_cells)
    assert (lut2[others, 3] == 1).all()
    # show only one type
    keep = counts.index[counts.argmin()]
    ann.show_only(keep)
    lut3 = _label_rgba(ann)
    visible = np.flatnonzero(lut3[:, 3] > 0)
    np.testing.assert_array_equal(np.sort(visible), np.sort(ann.label_ids[(ann.cell_type == keep).to_numpy()]))
    assert ann.hidden == frozenset(set(ann.categories) - {keep})
    ann.show_all()
    np.testing.assert_array_equal(_label_rgba(ann), lut)
    # every cell of the table has a label id, and only those
    code_lut = ann.label_code_lut()
    assert set(np.flatnonzero(code_lut)) == set(ann.label_ids.tolist())


def test_value_maps_for_confidence_and_distance(ann, raster):
    """The confidence and distance maps (``layers.cell_values_layer_data``) on the real raster."""
    from napari.layers import Labels

    from napari_cellama import layers as L

    labels, _ids = raster
    feats = pd.DataFrame({"index": ann.label_ids, CELL_ID: ann.cell_ids.astype(str)})
    cells = Labels(labels, features=feats)
    data, kwargs, kind = L.cell_values_layer_data(cells, ann.cell_ids, ann.table[CONFIDENCE].to_numpy(),
                                                  name="confidence")
    lut = data.lut
    assert kind == "image" and np.isnan(lut[0])
    np.testing.assert_allclose(lut[ann.label_ids], ann.table[CONFIDENCE].to_numpy(), rtol=1e-6)
    assert np.isnan(np.asarray(data)[labels == 0]).all()
    data, kwargs, _ = L.cell_values_layer_data(cells, ann.cell_ids, ann.table[DISTANCE].to_numpy(),
                                               name="distance", colormap="magma")
    lo, hi = kwargs["contrast_limits"]
    assert lo == pytest.approx(ann.table[DISTANCE].min(), rel=1e-5)
    assert hi == pytest.approx(ann.table[DISTANCE].max(), rel=1e-5)
    far = ann.label_ids[np.argmax(ann.table[DISTANCE].to_numpy())]
    near = ann.label_ids[np.argmin(ann.table[DISTANCE].to_numpy())]
    assert data.lut[far] == pytest.approx(hi) and data.lut[near] == pytest.approx(lo)
    assert "lut" not in kwargs["metadata"]["cellama"]  # metadata: descriptors, no live tables


def test_selection_by_label_ids(ann, raster):
    labels, _ = raster
    ys, xs = np.nonzero(labels)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    inside = np.unique(labels[cy - 60:cy + 60, cx - 60:cx + 60])  # a square "lasso" in the patch
    cells = ann.cell_ids_of_labels(inside)
    expected = set(ann.cell_ids[np.isin(ann.label_ids, inside)])
    assert set(cells) == expected and len(cells) > 0
    ann.assign(cells, "Lasso type")
    assert set(ann.cells_of("Lasso type")) == expected


def test_niche_cluster_slot(ann):
    assert ann.niche_cluster is None and NICHE_CLUSTER not in ann.table
    clusters = pd.Series(np.arange(ann.n_cells) % 3, index=ann.cell_ids)
    ann.set_niche_clusters(clusters.iloc[:-10])  # 10 cells without a cluster
    t = ann.table
    assert t[NICHE_CLUSTER].iloc[:-10].astype(str).tolist() == [str(v) for v in clusters.iloc[:-10]]
    assert t[NICHE_CLUSTER].iloc[-10:].isna().all()
    ann.set_niche_clusters(None)
    assert NICHE_CLUSTER not in ann.table


def test_table_restores_manual_edits(transfer, ann):
    ann.assign(ann.cell_ids[:4], "Osteoblast")
    ann.set_threshold(0.5)
    saved = ann.table
    again = Annotation(saved, min_confidence=0.5)
    pd.testing.assert_series_equal(again.cell_type.astype(str), ann.cell_type.astype(str))
    pd.testing.assert_series_equal(again.source.astype(str), ann.source.astype(str))
    state = ann.state()
    back = Annotation.from_state(saved, state)
    assert back.hex_colors == ann.hex_colors and back.n_undo == ann.n_undo
    back.undo()
    assert (back.source == SOURCE_TRANSFERRED).all()


def test_events_and_bad_input(ann):
    seen, labels_only = [], []
    ann.labels_changed.connect(seen.append)
    ann.labels_changed.connect(labels_only.append)
    for name in ("types", "colors", "visibility", "label_ids", "niche"):
        getattr(ann, f"{name}_changed").connect(lambda name=name: seen.append(name))
    ann.set_threshold(0.3)
    ann.assign(ann.cell_ids[:1], "X")
    ann.undo()
    ann.redo()
    ann.toggle("X")
    assert seen == ["threshold", "types", "edit", "undo", "redo", "visibility"]
    ann.set_color("X", "#102030")
    ann.set_niche_clusters(pd.Series("1", index=ann.cell_ids[:2]))
    ann.set_label_ids(ann.label_ids)
    ann.show_all()
    assert seen[6:] == ["colors", "niche", "label_ids", "visibility"]
    # a listener of the labels hears nothing of colours, visibility, niches or label ids
    assert labels_only == ["threshold", "edit", "undo", "redo"]
    with pytest.raises(CellamaInputError):
        ann.assign(["not-a-cell"], "X")
    with pytest.raises(CellamaInputError):
        ann.assign(ann.cell_ids[:1], "   ")
    with pytest.raises(CellamaInputError):
        ann.set_visible("no such type")
    with pytest.raises(CellamaInputError):
        Annotation(pd.DataFrame({"confidence": [0.5]}))
    with pytest.raises(CellamaInputError):
        ann.set_label_ids(np.ones(ann.n_cells, dtype=int))  # shared label ids
    assert ann.assign(ann.cell_ids[:1], "X") is None  # already X: nothing recorded


def test_100k_cells_recolour_vectorised():
    """Behaviour at the size of a whole Xenium section (speed: benchmarks/bench_annotation.py)."""
    n = 100_000
    rng = np.random.default_rng(0)
    types = np.array([f"type {i:02d}" for i in range(25)], dtype=object)
    t = types[rng.integers(0, 25, n)]
    table = pd.DataFrame({TRANSFERRED_TYPE: t, CONFIDENCE: rng.random(n).astype(np.float32),
                          DISTANCE: rng.random(n).astype(np.float32)},
                         index=[f"cell{i}" for i in range(n)])
    labels = rng.permutation(n) + 1
    a = Annotation(table, label_ids=labels)
    a.set_threshold(0.4)
    a.show_only(["type 03", UNASSIGNED])
    lut = _label_rgba(a)
    visible = lut[:, 3] > 0
    expected = (t == "type 03") & (table[CONFIDENCE].to_numpy() >= 0.4) | (table[CONFIDENCE].to_numpy() < 0.4)
    np.testing.assert_array_equal(np.sort(np.flatnonzero(visible)), np.sort(labels[expected]))
