"""Atomic writes for every file and folder napari-cellama writes (stdlib only, Qt-free).

One rule for the whole package: an output is written to a hidden temporary sibling
(``.NAME.tmp-XXXXXXXX[suffix]``) and renamed into place, so a reader sees the old
output or the new one, never half of one. On top of the rename:

* permissions: a new output gets the mode an ordinary ``open()`` would give it
  (``0o666`` for files, ``0o777`` for folders, minus the umask); a replaced output
  keeps the mode it had (``mkstemp`` / ``mkdtemp`` alone would leave ``0600``/``0700``);
* cleanup: every temporary is registered while it exists and removed when the write
  fails, is interrupted (Ctrl-C) or the process is asked to stop (SIGTERM/SIGHUP, see
  :func:`install_signal_handlers`, which the command line installs), and at exit.

Functions: :func:`write_file` (``write(tmp_path)`` then rename), :func:`write_dir`
(a folder written as a whole, e.g. a zarr store or a model folder), :func:`save_npy`,
:func:`write_text`, :func:`temporary_path` (a registered temporary sibling).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_LIVE: set[Path] = set()  # temporaries that exist right now
_LIVE_LOCK = threading.Lock()
_UMASK_LOCK = threading.Lock()


# --------------------------------------------------------------------------- permissions
def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def target_mode(path: str | os.PathLike, folder: bool = False) -> int:
    """Mode an output at ``path`` should get: the replaced one's, else the umask default."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return (0o777 if folder else 0o666) & ~current_umask()


# --------------------------------------------------------------------------- temporaries
def _register(p: Path) -> None:
    with _LIVE_LOCK:
        _LIVE.add(p)


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass
    with _LIVE_LOCK:
        _LIVE.discard(p)


def temporary_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden name next to ``path``: ``.NAME.tmp-XXXXXXXX[suffix]`` (nothing created)."""
    p = Path(path)
    return p.parent / f".{p.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}"


@contextmanager
def temporary_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A registered temporary sibling of ``path``, removed on leaving unless renamed away."""
    tmp = temporary_sibling(path, suffix)
    _register(tmp)
    try:
        yield tmp
    finally:
        _remove(tmp)


def live_temporaries() -> list[Path]:
    """Temporaries that exist right now (for tests and diagnostics)."""
    with _LIVE_LOCK:
        return sorted(_LIVE)


def cleanup_temporaries() -> int:
    """Remove every registered temporary still present; returns how many were removed."""
    with _LIVE_LOCK:
        todo = list(_LIVE)
    n = 0
    for p in todo:
        if p.exists() or p.is_symlink():
            n += 1
        _remove(p)
    return n


atexit.register(cleanup_temporaries)


# --------------------------------------------------------------------------- writers
def _fsync_file(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = "",
               fsync: bool = False) -> Path:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, then rename it into place.

    ``suffix`` ends the temporary's name (some writers pick the format from it, e.g.
    ``.h5ad``). The result gets :func:`target_mode`; on any error or interruption the
    temporary is removed and ``path`` is left as it was.
    """
    p = Path(path)
    mode = target_mode(p)
    with temporary_path(p, suffix) as tmp:
        write(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp}")
        os.chmod(tmp, mode)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, p)
    return p


def write_dir(path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = "",
              replace: bool = True, create: bool = False) -> Path:
    """Call ``write(tmp)`` to fill a temporary sibling folder of ``path``, then rename it into place.

    ``write`` creates the folder (or finds it created, empty, with ``create=True``). An existing
    ``path`` is moved aside, replaced and then removed (``replace=True``; the caller
    decides beforehand whether it may be replaced, see :mod:`napari_cellama.io.destinations`);
    with ``replace=False`` an existing ``path`` is kept and :class:`FileExistsError`
    raised. The folder gets :func:`target_mode` (``mkdtemp`` would give ``0700``).
    """
    p = Path(path)
    mode = target_mode(p, folder=True)
    with temporary_path(p, suffix) as tmp:
        if create:
            tmp.mkdir()
        write(tmp)
        if not tmp.is_dir():
            raise FileNotFoundError(f"the writer did not create the folder {tmp}")
        os.chmod(tmp, mode)
        if not replace:
            try:
                os.rename(tmp, p)  # fails on an existing non-empty folder
            except OSError:
                if p.exists():
                    raise FileExistsError(f"{p} already exists") from None
                raise
            return p
        with temporary_path(p, ".old") as old:
            moved = False
            if p.exists() or p.is_symlink():
                os.rename(p, old)
                moved = True
            try:
                os.rename(tmp, p)
            except BaseException:
                if moved:
                    os.rename(old, p)
                raise
    return p


def save_npy(path: str | os.PathLike, array) -> Path:
    """``numpy.save`` atomically (no pickles), synced to disk before the rename."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    return write_file(path, write, fsync=True)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` atomically."""
    return write_file(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


# --------------------------------------------------------------------------- signals
class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP.

    A ``KeyboardInterrupt`` so that every ``finally`` (temporaries, Dask clients)
    runs exactly as for Ctrl-C; ``signum`` gives the exit status ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def install_signal_handlers() -> dict:
    """Turn SIGTERM (and SIGHUP) into :class:`Terminated` in the main thread.

    Returns the previous handlers (for :func:`restore_signal_handlers`). Does nothing
    outside the main thread.
    """
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            previous[signum] = signal.signal(signum, _raise_terminated)
        except (OSError, ValueError):
            pass
    return previous


def restore_signal_handlers(previous: dict) -> None:
    """Put back handlers returned by :func:`install_signal_handlers`."""
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler)
        except (OSError, ValueError, TypeError):
            pass


__all__ = [
    "Terminated",
    "cleanup_temporaries",
    "current_umask",
    "install_signal_handlers",
    "live_temporaries",
    "restore_signal_handlers",
    "save_npy",
    "target_mode",
    "temporary_path",
    "temporary_sibling",
    "write_dir",
    "write_file",
    "write_text",
]
