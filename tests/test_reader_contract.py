"""The npe2 reader's contract: cheap to import, offered only for folders and ``experiment.xenium``,
``None`` (never an exception) for anything it cannot read, no reader prompt for other files."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
from importlib.resources import files

import numpy as np
import pytest

from napari_cellama._reader import napari_get_reader
from napari_cellama.paths import xenium_root

PLUGIN = "napari-cellama"


def test_importing_the_reader_is_cheap():
    """napari imports the reader for every drop: no numpy, pandas, anndata or spatialdata."""
    code = (
        "import sys, napari_cellama._reader as r\n"
        "heavy = [m for m in ('numpy', 'pandas', 'anndata', 'spatialdata', 'scanpy', 'torch', "
        "'napari_cellama.io', 'napari_cellama.core') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _manifest_readers():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(str(files("napari_cellama") / "napari.yaml"))
    (reader,) = manifest.contributions.readers
    return manifest, reader


def test_manifest_is_a_file_inside_the_package_and_valid():
    path = pathlib.Path(str(files("napari_cellama") / "napari.yaml"))
    assert path.is_file() and not path.is_symlink()
    manifest, _ = _manifest_readers()
    manifest.validate_imports()  # every python_name resolves
    assert manifest.name == PLUGIN


def test_reader_patterns_are_narrow():
    _, reader = _manifest_readers()
    assert "*" not in reader.filename_patterns
    assert reader.accepts_directories


@pytest.fixture
def plugin_manager():
    """A fresh npe2 plugin manager holding napari's builtins and this package's manifest."""
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager()
    pm.register(PluginManifest.from_distribution("napari"))
    pm.register(_manifest_readers()[0])
    return pm


@pytest.mark.parametrize("name", ["image.tif", "table.csv", "IMAGE.TIFF", "data.h5ad", "x.xenium"])
def test_other_files_are_not_offered_to_this_reader(plugin_manager, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"0")
    readers = {r.plugin_name for r in plugin_manager.iter_compatible_readers([str(path)])}
    assert PLUGIN not in readers


def test_experiment_file_is_offered_to_this_reader(plugin_manager, demo_data):
    path = demo_data.xenium_dir / "experiment.xenium"
    readers = {r.plugin_name for r in plugin_manager.iter_compatible_readers([str(path)])}
    assert readers == {PLUGIN}


@pytest.mark.gui
def test_tif_opens_in_napari_without_a_reader_prompt(viewer, tmp_path):
    """With the plugin installed, napari opens a .tif with its own reader (no MultipleReaderError)."""
    import tifffile

    tifffile.imwrite(tmp_path / "image.tif", np.arange(64, dtype=np.uint8).reshape(8, 8))
    layers = viewer.open(str(tmp_path / "image.tif"))
    assert [type(layer).__name__ for layer in layers] == ["Image"]


# ----------------------------------------------------------------------- never raises


def test_over_long_paths_give_none(tmp_path):
    too_long_name = tmp_path / ("a" * 300)  # one component past NAME_MAX: ENAMETOOLONG
    too_long_path = "/" + "/".join(["b" * 200] * 40)  # past PATH_MAX
    for p in (too_long_name, str(too_long_name), too_long_path, too_long_path + "/experiment.xenium"):
        assert napari_get_reader(p) is None
        assert xenium_root(p) is None


@pytest.mark.parametrize("value", ["bad\0path", b"/tmp", 3, None, object(), [], ["a", "b"], ("x\0",)])
def test_what_is_not_a_path_gives_none(value):
    assert napari_get_reader(value) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_folder_gives_none(tmp_path):
    locked = tmp_path / "locked"
    (locked / "run").mkdir(parents=True)
    (locked / "run" / "experiment.xenium").write_text("{}")
    locked.chmod(0)
    try:
        assert napari_get_reader(str(locked / "run")) is None
        assert napari_get_reader(str(locked / "run" / "experiment.xenium")) is None
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO, errno.EOVERFLOW, errno.ENAMETOOLONG])
def test_any_stat_error_gives_none(tmp_path, monkeypatch, code):
    """Every stat error, including those this machine cannot produce (root ignores modes)."""
    real_stat = pathlib.Path.stat

    def failing_stat(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", failing_stat)
    for p in (tmp_path, tmp_path / "experiment.xenium"):
        assert napari_get_reader(str(p)) is None


def test_a_real_run_is_still_read(demo_data):
    assert napari_get_reader(str(demo_data.xenium_dir)) is not None
    assert napari_get_reader(str(demo_data.xenium_dir / "experiment.xenium")) is not None
    assert napari_get_reader(demo_data.xenium_dir) is not None  # a pathlib.Path
