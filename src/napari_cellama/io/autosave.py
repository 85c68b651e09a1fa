"""Auto-save of the annotation session, offered back after a crash (Qt-free).

:class:`AutoSaver` writes the session (labels, manual edits, undo history, threshold, colours,
provenance: the cells table of :func:`~napari_cellama.io.export.cells_anndata` without counts
or embeddings) to ``<cache>/autosave/session-<pid>.h5ad`` (the user cache, :mod:`napari_cellama.paths`),
atomically (temporary sibling, then rename; :mod:`napari_cellama.atomic`), at most once every
``min_interval`` seconds (:meth:`AutoSaver.save_if_due`), and refuses files over ``max_bytes``.
A small manifest (``session-<pid>.json``: time, process id, cells, manual labels, inputs) is
written after the table.

On the next start, :func:`pending_autosave` finds the auto-save of a process that is no longer
running (a crash or a kill: a clean exit calls :meth:`AutoSaver.discard`), and
:func:`restore_autosave` reads it back as a :class:`~napari_cellama.io.export.Session`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ..validators import CellamaInputError

AUTOSAVE_SUBDIR = "autosave"
DEFAULT_AUTOSAVE_INTERVAL_S = 30.0
"""At most one auto-save every this many seconds (changes in between are coalesced)."""
DEFAULT_AUTOSAVE_MAX_BYTES = 256 * 1024 * 1024
"""Auto-saves larger than this are not kept (the user still saves with "Save session")."""


def autosave_dir() -> Path:
    """``<cache root>/autosave`` (``$NAPARI_CELLAMA_CACHE`` or the user cache folder)."""
    from ..paths import cache_root

    return cache_root() / AUTOSAVE_SUBDIR


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: treat as running
    return True


class AutoSaver:
    """Debounced, size-capped, atomic auto-saves of one process's session (see the module docstring).

    ``clock`` (seconds, monotonic) is replaceable for tests."""

    def __init__(self, folder=None, *, min_interval: float = DEFAULT_AUTOSAVE_INTERVAL_S,
                 max_bytes: int = DEFAULT_AUTOSAVE_MAX_BYTES, clock=time.monotonic):
        self.folder = Path(folder) if folder is not None else autosave_dir()
        self.min_interval = float(min_interval)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self.pid = os.getpid()
        self.dirty = False
        self.last_save: float | None = None
        self.last_error: str | None = None
        self.n_saves = 0
        self._lock = threading.Lock()

    @property
    def table_path(self) -> Path:
        return self.folder / f"session-{self.pid}.h5ad"

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"session-{self.pid}.json"

    # ------------------------------------------------------------------ when
    def note_change(self) -> None:
        """Something changed (an edit, a run): the next due save writes it."""
        self.dirty = True

    def seconds_until_due(self) -> float:
        """0 when a save may happen now, else the seconds to wait (debounce)."""
        if self.last_save is None:
            return 0.0
        return max(0.0, self.min_interval - (self.clock() - self.last_save))

    def save_if_due(self, annotation, result=None, inputs=None) -> Path | None:
        """Save when something changed and the last save is ``min_interval`` s old; else None."""
        if not self.dirty or self.seconds_until_due() > 0:
            return None
        return self.save(annotation, result, inputs)

    # ------------------------------------------------------------------ save / discard
    def save(self, annotation, result=None, inputs=None) -> Path | None:
        """Write the auto-save now (atomically); None (and ``last_error``) if it is over the cap."""
        from ..atomic import write_file
        from .export import cells_anndata

        with self._lock:
            self.dirty = False
            self.last_save = self.clock()
            params = getattr(result, "params", None)
            adata = cells_anndata(annotation, None, params=params, inputs=inputs)
            self.folder.mkdir(parents=True, exist_ok=True)
            write_file(self.table_path, lambda tmp: adata.write_h5ad(tmp), suffix=".h5ad")
            size = self.table_path.stat().st_size
            if size > self.max_bytes:
                self.table_path.unlink(missing_ok=True)
                self.manifest_path.unlink(missing_ok=True)
                self.last_error = (f"the auto-save ({size / 1e6:.0f} MB) is over the cap of "
                                   f"{self.max_bytes / 1e6:.0f} MB; save the session yourself")
                return None
            manifest = {
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "pid": self.pid,
                "n_cells": int(annotation.n_cells),
                "n_manual": int(annotation.manual_mask.sum()),
                "bytes": size,
                "table": self.table_path.name,
                "inputs": {k: str(v) for k, v in (inputs or {}).items() if v is not None},
            }
            write_file(self.manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(manifest), encoding="utf-8"),
                       suffix=".json")
            self.last_error = None
            self.n_saves += 1
            return self.table_path

    def discard(self) -> None:
        """Remove this process's auto-save (a clean exit: nothing to offer back)."""
        with self._lock:
            for p in (self.manifest_path, self.table_path):
                p.unlink(missing_ok=True)


def pending_autosave(folder=None) -> dict | None:
    """The newest auto-save left by a process that is no longer running (its manifest, with
    ``path``: the table), or None."""
    root = Path(folder) if folder is not None else autosave_dir()
    if not root.is_dir():
        return None
    found = []
    for m in root.glob("session-*.json"):
        try:
            info = json.loads(m.read_text(encoding="utf-8"))
            table = root / info["table"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not table.is_file() or _alive(int(info.get("pid", -1))):
            continue
        info["path"] = str(table)
        info["manifest"] = str(m)
        found.append((m.stat().st_mtime, info))
    return max(found, key=lambda x: x[0])[1] if found else None


def restore_autosave(info: dict):
    """The :class:`~napari_cellama.io.export.Session` of a :func:`pending_autosave` entry."""
    from .session_file import load_session

    path = Path(info.get("path", ""))
    if not path.is_file():
        raise CellamaInputError(f"the auto-saved session is gone ({path})")
    return load_session(path)


def discard_autosave(info: dict) -> None:
    """Delete a :func:`pending_autosave` entry (the user declined it, or it was restored)."""
    for key in ("manifest", "path"):
        if info.get(key):
            Path(info[key]).unlink(missing_ok=True)
