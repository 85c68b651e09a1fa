"""Keep freed memory in the process while a long step runs (Linux with glibc; elsewhere a no-op).

Why: on virtual machines whose host takes back the guest's free memory (virtio-balloon free
page reporting - this project's 2-core VM, and many cloud, container and serverless hosts),
memory a process frees is handed back to the host within seconds, and touching it again faults
it in anew from the host: measured here at about 10 s per GB (a 540 MB array takes 5-6 s to
fill the first time and 0.06 s when its pages are reused at once; they turn slow again after
2-3 s). A run allocates and frees large arrays stage after stage (the surrogate's kernel,
kNN blocks, the classifier's features) with long embedding stages in between, so each stage
paid for its memory again: on the bone-marrow section 18.9 s of the run's kernel CPU time, and
about 12 s of its 87 s (docs/performance.md).

:func:`retained_memory` asks glibc's allocator, for the duration of the step, to serve large
blocks from its heap instead of separate mappings (``M_MMAP_MAX`` 0) and not to give free
heap memory back (``M_TRIM_THRESHOLD``), so a freed block is reused without new faults (up to a
2 GiB free top of the heap, which is still trimmed). On leaving the outermost step blocks of
32 MiB and more are mapped separately again, free heap memory above 64 MiB is trimmed - where
glibc's own sliding thresholds end up, since any ``mallopt`` switches the sliding off - and
``malloc_trim(0)`` returns what is free to the system. Peak memory rises a little (the heap
cannot always reuse a freed block for a larger one). ``NAPARI_CELLAMA_RETAIN_MEMORY=0`` switches
it off; so does any ``MALLOC_*_`` variable or a ``glibc.malloc`` tunable the process was started
with (the user's settings are left alone).

Allocations of threads other than the main one come from glibc's per-thread arenas, which
still map blocks above 64 MB separately: in napari (whose steps run in a worker thread) the
gain is smaller than in the CLI or the API.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ENV_RETAIN_MEMORY = "NAPARI_CELLAMA_RETAIN_MEMORY"
"""Set to ``0`` to leave the allocator as it is."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default (mallopt(3))
# After the step: where glibc's own sliding thresholds end up after large blocks were freed (any
# mallopt of these switches the sliding off for good, so "the defaults" cannot be written back;
# 128 KiB would map and unmap every array above it, faulting it in anew each time)
_AFTER_MMAP_THRESHOLD = 32 * 1024 * 1024
_AFTER_TRIM_THRESHOLD = 2 * _AFTER_MMAP_THRESHOLD
_KEEP = 2**31 - 1  # the largest value mallopt takes: free heap memory is not given back

_lock = threading.Lock()
_depth = 0
_libc_handle: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _libc() -> ctypes.CDLL | None:
    global _libc_handle
    if _libc_handle is False:
        _libc_handle = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc_handle = libc
            except (OSError, AttributeError):  # not glibc (e.g. musl)
                _libc_handle = None
    return _libc_handle


_start_environ: dict[str, str] | None = None


def _environ_at_start() -> dict[str, str]:
    """The environment the process started with (``/proc/self/environ``), which is what glibc read
    its ``MALLOC_*_`` settings from. ``os.environ`` is no guide: Dask's nanny, for one, adds
    ``MALLOC_TRIM_THRESHOLD_`` to it for the workers it spawns, which leaves this process's
    allocator as it was."""
    global _start_environ
    if _start_environ is None:
        try:
            raw = Path("/proc/self/environ").read_bytes()
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            _start_environ = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
        except OSError:
            _start_environ = dict(os.environ)
    return _start_environ


def _wanted() -> bool:
    if os.environ.get(ENV_RETAIN_MEMORY, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    # the user tuned the allocator when starting the process: leave it as set
    start = _environ_at_start()
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in start):
        return False
    return "glibc.malloc" not in start.get("GLIBC_TUNABLES", "")


def _apply(libc: ctypes.CDLL) -> None:
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)


def _restore(libc: ctypes.CDLL) -> None:
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM_THRESHOLD)
    libc.malloc_trim(0)


@contextlib.contextmanager
def retained_memory() -> Iterator[bool]:
    """Context for a long step: freed memory stays in the process until the outermost one ends.

    Yields whether the allocator was changed (glibc on Linux, not switched off, not tuned by the
    user). Nested
    and concurrent steps share one setting: the last to leave restores the defaults.
    """
    global _depth
    libc = _libc() if _wanted() else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            _apply(libc)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore(libc)


def retaining() -> bool:
    """Whether a step is running inside :func:`retained_memory` with the allocator changed."""
    return _depth > 0


__all__ = ["ENV_RETAIN_MEMORY", "retained_memory", "retaining"]
