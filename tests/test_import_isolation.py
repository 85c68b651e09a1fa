"""The engine must stay importable without Qt or napari."""

import subprocess
import sys


def test_core_and_io_do_not_import_gui_modules():
    code = (
        "import sys, napari_cellama.core, napari_cellama.io, napari_cellama.cli;"
        "bad=[m for m in ('qtpy','napari','PyQt5','PyQt6','PySide6','magicgui') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"GUI modules imported by the core: {out.stdout}"
