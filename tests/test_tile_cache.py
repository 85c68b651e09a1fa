"""The shared tile cache under the lazy raster levels (``layers/tiles.py``, issue 16: next in the
review queue <= 0.2 s including napari's redraw).

Unit tests on real dask / zarr arrays: every key reads what the base holds, each stored chunk
is decoded once (also from several threads), the byte budget evicts, prefetch fills the cache.
GUI tests in a real viewer (under xvfb-run -a) on a 150-cell patch of the real bone-marrow crop
whose cell-label levels are made lazy, as the full section's are: the layers share one cache,
napari reads tiles (not whole stored chunks), an edit or undo recolours cached tiles, the
prefetched next cell shows its current label, and the ``selected cells`` layer stays hidden
until something is selected.
"""

from __future__ import annotations

import threading
import warnings

import dask.array as da
import numpy as np
import pytest

from napari_cellama.layers.tiles import TileCache, TiledLevel, prefetch, tiled_base, tiled_levels


def _counted(a: np.ndarray, chunks):
    """A dask array over ``a`` counting how often each stored chunk is computed."""
    counts: dict = {}
    lock = threading.Lock()

    def load(block, block_info=None):
        key = tuple(block_info[0]["chunk-location"])
        with lock:
            counts[key] = counts.get(key, 0) + 1
        return block

    return da.from_array(a, chunks=chunks).map_blocks(load, dtype=a.dtype), counts


KEYS = [
    (slice(10, 900), slice(5, 1299)), (slice(None), slice(None)), (5, 7), (slice(3, 800, 3), slice(None, None, 2)),
    Ellipsis, (999,), (slice(990, 2000), 1299), (-1, -1), (slice(-300, None), slice(0, 1)), (slice(40, 40), 3),
]


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_tiled_level_reads_what_the_base_holds(kind):
    import zarr

    a = np.random.default_rng(0).integers(0, 90_000, (1000, 1300)).astype(np.uint32)
    if kind == "dask":
        base = da.from_array(a, chunks=(600, 700))
    else:
        base = zarr.create_array(store={}, shape=a.shape, chunks=(512, 512), dtype=a.dtype)
        base[:] = a
    level = TiledLevel(base, tile=128, cache=TileCache())
    assert level.shape == a.shape and level.dtype == a.dtype and level.chunks == (128, 128)
    for key in KEYS:
        got, want = level[key], a[key]
        assert np.array_equal(got, want) and np.shape(got) == np.shape(want), key
    assert np.array_equal(np.asarray(level), a)
    with pytest.raises(IndexError):
        level[1000, 0]


def test_each_stored_chunk_is_decoded_once_even_from_threads():
    a = np.random.default_rng(1).integers(0, 1000, (900, 1000)).astype(np.uint32)
    base, counts = _counted(a, (400, 400))
    level = TiledLevel(base, tile=100, cache=TileCache())
    rng = np.random.default_rng(2)
    boxes = [tuple(int(v) for v in (y, y + h, x, x + w))
             for y, x, h, w in zip(rng.integers(0, 800, 40), rng.integers(0, 900, 40),
                                   rng.integers(1, 300, 40), rng.integers(1, 300, 40), strict=True)]
    errors = []

    def reader(part):
        for r0, r1, c0, c1 in part:
            if not np.array_equal(level[r0:r1, c0:c1], a[r0:r1, c0:c1]):
                errors.append((r0, r1, c0, c1))

    threads = [threading.Thread(target=reader, args=(boxes[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert counts and max(counts.values()) == 1  # every stored chunk decoded once
    before = dict(counts)
    assert np.array_equal(level[:, :], a) and counts == {k: 1 for k in counts} and set(before) <= set(counts)


def test_byte_budget_evicts_least_recently_used_and_reads_stay_right():
    a = np.random.default_rng(3).integers(0, 2**31, (1024, 1024)).astype(np.uint32)  # barely compressible
    cache = TileCache(max_bytes=600_000)
    level = TiledLevel(da.from_array(a, chunks=(256, 256)), tile=256, cache=cache)
    for r in range(0, 1024, 256):
        for c in range(0, 1024, 256):
            assert np.array_equal(level[r:r + 256, c:c + 256], a[r:r + 256, c:c + 256])
    assert cache.nbytes <= 600_000 and 0 < len(cache) < 16
    assert (level._token, 3, 3) in cache and (level._token, 0, 0) not in cache  # oldest went first
    assert np.array_equal(level[0:10, 0:10], a[0:10, 0:10])  # re-read after eviction


def test_prefetch_fills_the_cache_on_a_worker_thread():
    a = np.arange(600 * 800, dtype=np.uint32).reshape(600, 800)
    base, counts = _counted(a, (300, 400))
    cache = TileCache()
    level = TiledLevel(base, tile=100, cache=cache)
    assert prefetch([(level, (250, 350, 350, 450))]).result(timeout=60) == 4
    assert len(counts) == 4  # the four stored chunks around the box
    misses = cache.misses
    assert np.array_equal(level[250:350, 350:450], a[250:350, 350:450]) and cache.misses == misses
    assert level.prefetch(-50, 2000, 0, 10) == 0 or len(counts) > 4  # clipped to the array


def test_tiled_levels_wraps_lazy_levels_only():
    lazy = da.zeros((600, 600), chunks=300, dtype=np.uint32)
    small = np.zeros((300, 300), np.uint32)
    levels = tiled_levels([lazy, small])
    assert isinstance(levels[0], TiledLevel) and levels[1] is small
    assert tiled_levels(levels)[0] is levels[0]
    from napari_cellama.layers import LabelLookup

    lookup = LabelLookup(levels[0], np.zeros(2, np.uint8))
    assert tiled_base(lookup) is levels[0] and lookup.chunks == levels[0].chunks
    assert LabelLookup(small, np.zeros(2, np.uint8)).chunks is None


# ---------------------------------------------------------------------------------------- GUI


def _lazy_setup(viewer, qtbot, crop_dir, tmp_path):
    """The patch's layers with lazy (dask) cell-label levels, a transfer shown, dock 4 ready."""
    from _hash_embedder import HashEmbedder
    from test_review_widget import _setup

    from napari_cellama.io.xenium_run import label_pyramid

    kept = {}

    def lazy_levels(run):
        kept["level0"] = level0 = np.asarray(run.cell_levels[0])
        run.cell_levels = label_pyramid(da.from_array(level0, chunks=(1024, 1024)), len(run.cell_levels),
                                        max_bytes=0)

    session, _, review = _setup(viewer, qtbot, crop_dir, tmp_path, embedder=HashEmbedder(), prepare_run=lazy_levels)
    return session, review, kept["level0"]


def _shown(layer, level0) -> tuple[np.ndarray, np.ndarray]:
    """What napari sliced for ``layer`` (raw values) and the cell labels there (level 0 taken at
    the layer's data level, as the pyramid does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw, corners = np.asarray(layer._slice.image.raw), np.asarray(layer.corner_pixels)
    step = 2 ** layer.data_level
    (r0, c0), (r1, c1) = corners[0, -2:], corners[1, -2:] + 1
    return raw, level0[::step, ::step][r0:r1, c0:c1], corners


def _label_of(session, cell_id) -> int:
    feats = session.query.obs
    return int(feats.loc[str(cell_id), "label"])


@pytest.mark.gui
def test_layers_share_one_tile_cache_and_edits_recolour_cached_tiles(viewer, qtbot, crop_dir, tmp_path):
    from napari_cellama._qt.selection_view import SELECTION_LAYER
    from napari_cellama.layers import lookup_table
    from napari_cellama.layers.tiles import TILE

    session, review, level0 = _lazy_setup(viewer, qtbot, crop_dir, tmp_path)
    cells, types = viewer.layers["cells"], viewer.layers["cell types"]
    assert isinstance(cells.data[0], TiledLevel)
    assert types.data[0].base is cells.data[0]  # the cell types read the cells layer's tiles
    assert not viewer.layers[SELECTION_LAYER].visible  # nothing selected: nothing to re-slice
    ann = review.annotation
    for _ in range(3):
        cell = review.next_cell()
        qtbot.wait(50)
        assert cells.data_level < len(cells.data) - 1  # a lazy level, read through the cache
        raw, truth, corners = _shown(cells, level0)
        assert (corners[0, -2:] % TILE == 0).all()  # napari reads whole tiles, not whole stored chunks
        np.testing.assert_array_equal(raw, truth)
        shown, truth, _ = _shown(types, level0)
        np.testing.assert_array_equal(shown, lookup_table(types)[truth])
        # clicking reads the label under the pointer through the tiles
        yx = review.cursor_position
        row, col = (int(v) for v in np.floor(np.asarray(cells.world_to_data(yx))[-2:] + 0.5))
        label = int(level0[row, col])
        want = None if label == 0 else str(ann.cell_ids_of_labels([label])[0])
        assert review.cell_at(yx) == want
    # an edit: the cached tiles show the new type, without decoding the raster again
    label = _label_of(session, cell)
    new_type = next(t for t in ann.categories if t != ann.cell_type[cell])
    misses = cells.data[0].cache.misses
    review.reassign(new_type, cell, advance=False)
    qtbot.wait(50)
    shown, truth, _ = _shown(types, level0)
    mask = truth == label
    assert mask.any()
    code = ann.categories.index(new_type) + 1
    assert (shown[mask] == code).all()
    assert cells.data[0].cache.misses == misses
    review.undo()
    qtbot.wait(50)
    shown, _, _ = _shown(types, level0)
    assert (shown[mask] == ann.categories.index(ann.cell_type[cell]) + 1).all() and ann.cell_type[cell] != new_type
    # a selection shows the outlines layer, an empty one hides it again
    session.selection.select([cell])
    assert viewer.layers[SELECTION_LAYER].visible
    session.selection.clear()
    assert not viewer.layers[SELECTION_LAYER].visible


@pytest.mark.gui
def test_prefetched_next_cell_shows_its_current_label(viewer, qtbot, crop_dir, tmp_path):
    from napari_cellama.layers import lookup_table

    session, review, level0 = _lazy_setup(viewer, qtbot, crop_dir, tmp_path)
    cells, types = viewer.layers["cells"], viewer.layers["cell types"]
    cache = cells.data[0].cache
    review.next_cell()
    qtbot.wait(50)
    nxt = review.queue.peek()
    future = review.prefetch_next()
    assert future is not None and future.result(timeout=60) >= 0
    # the tiles of the next view are there now; relabel the next cell after its tiles were read
    ann = review.annotation
    new_type = next(t for t in ann.categories if t != ann.cell_type[nxt])
    ann.assign([nxt], new_type, reason="test")
    misses = cache.misses
    assert review.next_cell() == nxt
    qtbot.wait(50)
    assert cache.misses == misses  # napari found every tile of the new view decoded
    shown, truth, _ = _shown(types, level0)
    np.testing.assert_array_equal(shown, lookup_table(types)[truth])
    mask = truth == _label_of(session, nxt)
    assert mask.any() and (shown[mask] == ann.categories.index(new_type) + 1).all()
    assert review.queue.peek() != nxt
