"""The npe2 reader in a real viewer: the real crop and the demo, aligned layers, broken folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_cellama._reader import napari_get_reader
from napari_cellama.layers import layer_kind

PLUGIN = "napari-cellama"


def _tiff_levels(root):
    with tifffile.TiffFile(root / "morphology_focus" / "morphology_focus_0000.ome.tif") as tif:
        return [lvl.shape for lvl in tif.series[0].levels], tif.series[0].dtype


def _check_run_layers(viewer, qtbot, layers, root, tmp_path):
    """Types, units, alignment, features and a non-blank screenshot of one opened run."""
    px = json.loads((root / "experiment.xenium").read_text())["pixel_size"]
    assert [(type(layer).__name__, layer_kind(layer)) for layer in layers] == [
        ("Image", "morphology"),
        ("Labels", "cells"),
        ("Points", "centroids"),
    ]
    image, cells, points = layers

    # microns everywhere: rasters scaled by the pixel size, shifted by half a pixel
    for raster in (image, cells):
        np.testing.assert_allclose(raster.scale, [px, px])
        np.testing.assert_allclose(raster.translate, [px / 2, px / 2])
    np.testing.assert_allclose(points.scale, [1, 1])
    np.testing.assert_allclose(image.extent.world, cells.extent.world)

    # the image pyramid is the file's own; labels follow the same level shapes
    level_shapes, dtype = _tiff_levels(root)
    assert image.multiscale and [tuple(lvl.shape) for lvl in image.data] == level_shapes
    assert cells.multiscale and [tuple(lvl.shape) for lvl in cells.data] == level_shapes
    # contrast limits come from the pixels, not from the uint16 range
    # (0.5th and 99.9th percentiles of the coarsest level with at least 65,536 pixels)
    level = next(lvl for lvl in reversed(image.data) if np.prod(lvl.shape) >= 65536)
    expected = np.percentile(np.asarray(level), [0.5, 99.9])
    np.testing.assert_allclose(image.contrast_limits, expected)
    assert expected[0] < expected[1] <= np.asarray(level).max() < np.iinfo(dtype).max

    # per-cell features keyed by cell_id, from cells.parquet
    table = pd.read_parquet(root / "cells.parquet").set_index("cell_id")
    feats = cells.features
    assert list(feats.columns[:2]) == ["index", "cell_id"]
    assert feats["cell_id"].is_unique and set(feats["cell_id"]) == set(table.index)
    np.testing.assert_array_equal(
        feats["transcript_counts"], table.loc[feats["cell_id"], "transcript_counts"]
    )
    np.testing.assert_allclose(feats["cell_area"], table.loc[feats["cell_id"], "cell_area"])
    assert not points.visible and len(points.data) == len(table)
    assert list(points.features["cell_id"]) == list(feats["cell_id"])
    np.testing.assert_allclose(
        points.data[:, ::-1], table.loc[points.features["cell_id"], ["x_centroid", "y_centroid"]]
    )

    # alignment: every centroid falls inside its own cell of the label image (level 0)
    level0 = np.asarray(cells.data[0])
    idx = np.array([np.round(cells.world_to_data(p)).astype(int) for p in points.data])
    inside = level0[idx[:, 0], idx[:, 1]] == points.features["label"].to_numpy()
    assert inside.all(), f"{(~inside).sum()} centroids outside their own cell"

    # hovering a cell shows its features in the status bar
    k = len(points.data) // 2
    pos, cell_id = points.data[k], points.features["cell_id"].iloc[k]
    viewer.layers.selection.active = cells
    _camera(viewer).center = tuple(pos)
    _camera(viewer).zoom = 2.0 / px
    qtbot.wait(200)
    status = cells.get_status(pos, world=True)["coordinates"]
    assert f"cell_id: {cell_id}" in status and "transcript_counts:" in status

    # a real screenshot of the whole run, not blank
    viewer.reset_view()
    qtbot.wait(200)
    shot = viewer.screenshot(str(tmp_path / f"{root.name}.png"), canvas_only=True, flash=False)
    rgb = shot[..., :3].reshape(-1, 3)
    assert rgb.std() > 10 and len(np.unique(rgb, axis=0)) > 500


@pytest.mark.gui
def test_open_real_crop(viewer, qtbot, crop_dir, tmp_path):
    layers = viewer.open(str(crop_dir), plugin=PLUGIN)
    _check_run_layers(viewer, qtbot, layers, crop_dir, tmp_path)
    assert len(layers[1].features) == 4595


@pytest.mark.gui
def test_open_demo_via_experiment_file(viewer, qtbot, demo_data, tmp_path):
    layers = viewer.open(str(demo_data.xenium_dir / "experiment.xenium"), plugin=PLUGIN)
    _check_run_layers(viewer, qtbot, layers, demo_data.xenium_dir, tmp_path)
    # the nuclei of the DAPI image sit inside the cells: bright at centroids, dark off-tissue
    image, cells, points = layers
    level0 = np.asarray(image.data[0]).astype(float)
    idx = np.array([np.round(image.world_to_data(p)).astype(int) for p in points.data])
    at_centroids = level0[idx[:, 0], idx[:, 1]]
    background = level0[np.asarray(cells.data[0]) == 0]
    assert np.median(at_centroids) > 5 * np.median(background)


@pytest.mark.gui
def test_sample_data_opens_demo(viewer, demo_data, monkeypatch):
    monkeypatch.setenv("NAPARI_CELLAMA_CACHE", str(demo_data.root.parent))
    viewer.open_sample(PLUGIN, "demo")
    assert [layer_kind(layer) for layer in viewer.layers] == ["morphology", "cells", "centroids"]
    assert len(viewer.layers["cells"].features) == demo_data.manifest["n_cells"]


def test_reader_declines_what_is_not_xenium(tmp_path, demo_data):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "cells.parquet").write_bytes(b"not a run")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    assert napari_get_reader(str(tmp_path / "plain")) is None
    assert napari_get_reader(str(tmp_path / "table.csv")) is None
    assert napari_get_reader(str(tmp_path / "missing")) is None
    assert napari_get_reader([str(demo_data.xenium_dir), str(demo_data.xenium_dir)]) is None
    assert napari_get_reader(str(demo_data.xenium_dir)) is not None
    assert napari_get_reader([str(demo_data.xenium_dir)]) is not None


@pytest.mark.gui
def test_non_xenium_folder_is_refused_by_napari(viewer, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="refused"):
        viewer.open(str(tmp_path / "plain"), plugin=PLUGIN)
    assert len(viewer.layers) == 0


# ----------------------------------------------------------------------------- broken folders


@pytest.fixture
def broken_copy(demo_data, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(demo_data.xenium_dir, dst)
    return dst


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _open_broken(viewer, path):
    """Open a broken run: no exception, no layer, one error notification; return its text."""
    from napari.utils.notifications import notification_manager

    before = len(notification_manager.records)
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert layers == [] and len(viewer.layers) == 0
    new = notification_manager.records[before:]
    assert new, "no notification was shown"
    return str(new[-1].message)


@pytest.mark.gui
def test_missing_cells_zarr_zip(viewer, broken_copy, demo_data):
    (broken_copy / "cells.zarr.zip").unlink()
    message = _open_broken(viewer, broken_copy)
    assert "missing cells.zarr.zip" in message
    # the viewer stays usable: a good run opens in it afterwards
    layers = viewer.open(str(demo_data.xenium_dir), plugin=PLUGIN)
    assert len(layers) == 3


@pytest.mark.gui
def test_truncated_cell_feature_matrix(viewer, broken_copy):
    _truncate(broken_copy / "cell_feature_matrix.h5")
    message = _open_broken(viewer, broken_copy)
    assert "cell_feature_matrix.h5" in message and "broken or truncated" in message


@pytest.mark.gui
def test_missing_cell_feature_matrix(viewer, broken_copy):
    (broken_copy / "cell_feature_matrix.h5").unlink()
    assert "missing cell_feature_matrix.h5" in _open_broken(viewer, broken_copy)


@pytest.mark.gui
def test_corrupt_cells_zarr_zip(viewer, broken_copy):
    _truncate(broken_copy / "cells.zarr.zip", 0.7)
    message = _open_broken(viewer, broken_copy)
    assert "cells.zarr.zip" in message


@pytest.mark.gui
def test_truncated_cells_parquet(viewer, broken_copy):
    _truncate(broken_copy / "cells.parquet")
    message = _open_broken(viewer, broken_copy)
    assert "cells.parquet" in message and "broken or truncated" in message


@pytest.mark.gui
def test_unreadable_experiment_file(viewer, broken_copy):
    (broken_copy / "experiment.xenium").write_text("{ not json")
    assert "experiment.xenium" in _open_broken(viewer, broken_copy)


@pytest.mark.gui
def test_truncated_morphology_image(viewer, broken_copy):
    _truncate(broken_copy / "morphology_focus" / "morphology_focus_0000.ome.tif", 0.6)
    assert "morphology_focus_0000.ome.tif" in _open_broken(viewer, broken_copy)


@pytest.mark.gui
def test_missing_morphology_image(viewer, broken_copy):
    shutil.rmtree(broken_copy / "morphology_focus")
    assert "no morphology image" in _open_broken(viewer, broken_copy)


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9; ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera
