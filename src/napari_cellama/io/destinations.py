"""May napari-cellama write (or replace) this? One place for every output check (Qt-free).

Rules (see ``docs/reliability.md``):

* every destination of a run is checked before any work starts (:func:`check_outputs`):
  its folder exists and is writable, it is not inside a Xenium run or an input, it does
  not contain an input, and no two outputs of the run name the same path;
* an existing file may be replaced (atomically, see :mod:`napari_cellama.atomic`);
* an existing folder is replaced only when it is *this tool's own output*: a SpatialData
  zarr carrying the :data:`ZARR_MARKER` file (or, for stores written before the marker,
  a ``uns['cellama']`` group in its cells table), a fine-tuned model folder carrying its
  ``cellama_finetune.json`` record, or an empty folder. Anything else is refused with one
  line saying what to do; a foreign zarr store is replaced only with an explicit
  ``overwrite`` (never an input or a Xenium run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._constants import SPATIALDATA_TABLE, UNS_KEY
from ..validators import CellamaInputError
from .xenium import EXPERIMENT_FILE

ZARR_MARKER = ".napari-cellama.json"
"""File napari-cellama writes at the root of every zarr store it exports."""


def _resolved(path) -> Path:
    p = Path(path).expanduser()
    return p.parent.resolve() / p.name


def xenium_folder_containing(path) -> Path | None:
    """The Xenium output folder (has ``experiment.xenium``) that ``path`` is in or is, else None."""
    p = _resolved(path)
    for folder in (p, *p.parents):
        try:
            if (folder / EXPERIMENT_FILE).is_file():
                return folder
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- own outputs
def is_zarr_store(p: Path) -> bool:
    """A folder with zarr metadata at its root."""
    return any((Path(p) / f).exists() for f in ("zarr.json", ".zgroup", ".zattrs"))


def is_own_zarr(p) -> bool:
    """A zarr store written by napari-cellama (its marker, or the cells table's ``uns['cellama']``)."""
    p = Path(p)
    if (p / ZARR_MARKER).is_file():
        return True
    return is_zarr_store(p) and (p / "tables" / SPATIALDATA_TABLE / "uns" / UNS_KEY).is_dir()


def write_zarr_marker(folder, **info) -> None:
    """Mark a zarr store (being written) as napari-cellama's own."""
    from .. import __version__

    record = {"software": f"napari-cellama {__version__}", **info}
    (Path(folder) / ZARR_MARKER).write_text(json.dumps(record) + "\n")


def is_finetune_output(p) -> bool:
    """A fine-tuned model folder written by napari-cellama (has its ``cellama_finetune.json``)."""
    from ..core.finetune import FINETUNE_RECORD

    return (Path(p) / FINETUNE_RECORD).is_file()


def _is_empty_dir(p: Path) -> bool:
    try:
        return p.is_dir() and not any(p.iterdir())
    except OSError:
        return False


# --------------------------------------------------------------------------- checks
def check_writable_folder(folder, what: str) -> None:
    """The folder exists and a file can be created in it (a real probe: read-only mounts, ACLs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CellamaInputError(f"folder {folder} for the {what} does not exist; create it first")
    from ..atomic import temporary_path

    try:
        with temporary_path(folder / "probe", ".probe") as tmp:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
    except OSError as err:
        raise CellamaInputError(
            f"cannot write the {what} in {folder} ({err.strerror or err}); choose a writable folder"
        ) from None


def check_destination(path, what: str = "output", *, sources=(), folder: bool = False,
                      overwrite: bool = True, replace_foreign: bool = False) -> Path:
    """Check one export destination before anything is computed; return it resolved.

    Refuses a destination inside a Xenium output folder or inside / around any of
    ``sources`` (the input paths), a missing or unwritable parent folder, a file output
    that is a folder and, for folder outputs (``folder=True``, a zarr store), an existing
    non-empty path unless ``overwrite`` and it is a zarr store written by napari-cellama
    (a zarr store written by another tool only with ``replace_foreign=True``; never a
    folder that is not a zarr store).
    """
    p = _resolved(path)
    run = xenium_folder_containing(p)
    if run is not None:
        raise CellamaInputError(
            f"{what} {p} is inside the Xenium input folder {run}; choose a location outside it"
        )
    for src in sources or ():
        if src is None:
            continue
        s = _resolved(src)
        if p == s or s in p.parents:
            raise CellamaInputError(f"{what} {p} is inside the input {s}; choose another location")
        if p in s.parents:
            raise CellamaInputError(f"{what} {p} contains the input {s}; choose another location")
    check_writable_folder(p.parent, what)
    if folder:
        if p.exists() and not _is_empty_dir(p):
            if not p.is_dir() or not is_zarr_store(p):
                raise CellamaInputError(
                    f"{what} {p} already exists and is not a zarr store; choose a new name"
                )
            if not overwrite:
                raise CellamaInputError(f"{what} {p} already exists; choose a new name or allow overwriting")
            if not is_own_zarr(p) and not replace_foreign:
                raise CellamaInputError(
                    f"{what} {p} is a zarr store not written by napari-cellama; choose a new name "
                    "(or add --overwrite to replace it)"
                )
    elif p.is_dir():
        raise CellamaInputError(f"{what} {p} is a folder; give a file name")
    return p


def check_model_folder(path, overwrite: bool = False, sources=()) -> Path:
    """Destination of a fine-tuned model: new, empty, or (with ``overwrite``) an earlier fine-tuned model.

    A folder holding anything else (a project, a Xenium run, the reference itself) is
    never replaced, with or without ``overwrite``.
    """
    p = _resolved(path)
    what = "fine-tuned model folder"
    run = xenium_folder_containing(p)
    if run is not None:
        raise CellamaInputError(f"{what} {p} is inside the Xenium folder {run}; choose a location outside it")
    for src in sources or ():
        if src is None:
            continue
        s = _resolved(src)
        if p == s or p in s.parents or s in p.parents:
            raise CellamaInputError(f"{what} {p} overlaps the input {s}; choose a new folder")
    if p.exists() and not p.is_dir():
        raise CellamaInputError(f"output {p} is a file; give a folder for the fine-tuned model")
    check_writable_folder(p.parent, what)
    if p.is_dir() and not _is_empty_dir(p):
        if not is_finetune_output(p):
            raise CellamaInputError(
                f"output folder {p} is not empty and is not a model fine-tuned by napari-cellama "
                "(no cellama_finetune.json); choose a new or empty folder"
            )
        if not overwrite:
            raise CellamaInputError(
                f"output folder {p} is not empty: it holds an earlier fine-tuned model; choose a new folder "
                "or add --overwrite"
            )
    return p


def check_outputs(outputs: Mapping[str, object], *, sources: Iterable = (), folders: Iterable[str] = (),
                  replace_foreign: bool = False) -> dict[str, Path]:
    """Check every destination of one run before it starts; returns ``{what: resolved path}``.

    ``outputs`` maps a description (``"output CSV"``) to a path (``None``: not asked
    for); names in ``folders`` are folder outputs (zarr stores). Each is checked with
    :func:`check_destination`, then no two may name the same path or lie inside one
    another (e.g. ``--out`` and ``--explorer-csv`` the same file).
    """
    folders = set(folders)
    sources = [s for s in sources if s is not None]
    checked: dict[str, Path] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        p = check_destination(path, what, sources=sources, folder=what in folders,
                              replace_foreign=replace_foreign)
        for other, q in checked.items():
            if p == q:
                raise CellamaInputError(f"the {what} and the {other} are the same file {p}; give different names")
            if q in p.parents or p in q.parents:
                raise CellamaInputError(f"the {what} {p} and the {other} {q} overlap; give separate locations")
        checked[what] = p
    return checked


__all__ = [
    "ZARR_MARKER",
    "check_destination",
    "check_model_folder",
    "check_outputs",
    "check_writable_folder",
    "is_finetune_output",
    "is_own_zarr",
    "is_zarr_store",
    "write_zarr_marker",
    "xenium_folder_containing",
]
