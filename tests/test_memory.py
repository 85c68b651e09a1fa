"""The allocator setting that keeps freed memory in the process during a long step."""

import sys

import numpy as np
import pytest

from napari_cellama.core import memory
from napari_cellama.core._progress import run

psutil = pytest.importorskip("psutil")
glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None,
                           reason="glibc's mallopt only")

MB = 2**20


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _freed_block_stays(size_mb: int = 200) -> bool:
    """Allocate, fill and free a large block; whether its memory is still resident."""
    before = _rss()
    block = np.ones(size_mb * MB // 8)
    del block
    return _rss() - before > size_mb * MB // 2


@glibc
def test_freed_memory_stays_during_a_step_and_is_returned_after(monkeypatch, allocator_defaults):
    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    assert not _freed_block_stays()  # defaults: a large block is its own mapping, unmapped on free
    with memory.retained_memory() as changed:
        assert changed and memory.retaining()
        with memory.retained_memory():  # nested steps share the setting
            pass
        assert memory.retaining()
        inside = _rss()
        assert _freed_block_stays()
        # reused without growing: a second block of the same size takes the freed memory
        block = np.ones(200 * MB // 8)
        assert _rss() - inside < 260 * MB
        del block
    assert not memory.retaining()
    assert _rss() - inside < 100 * MB  # the outermost exit trimmed the heap
    assert not _freed_block_stays()  # and the defaults are back


@glibc
def test_after_a_step_mid_sized_arrays_are_not_mapped_anew(monkeypatch, allocator_defaults):
    """After a step, blocks below 32 MiB come from the heap again (glibc's sliding threshold is
    switched off by any mallopt, so the exit must not write back the 128 KiB start value: every
    4 MB array would then be a fresh mapping, faulted in anew)."""
    import resource

    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    memory._libc().mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD at glibc's start value, as in a new process
    with memory.retained_memory():
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        block = np.ones(4 * MB // 8)
        del block
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 20_000, faults  # fresh mappings: ~100 x 1,024 pages


@glibc
@pytest.mark.parametrize("setting", [{"MALLOC_ARENA_MAX_": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}, {}])
def test_allocator_settings_the_process_started_with_are_left_alone(setting):
    """Read from the environment the process started with (what glibc read), not ``os.environ``,
    which e.g. Dask's nanny changes for its workers."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", memory.ENV_RETAIN_MEMORY))}
    env.update(setting)
    code = "from napari_cellama.core import memory\nwith memory.retained_memory() as changed:\n    print(changed)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("False" if setting else "True")


@glibc
def test_a_malloc_variable_set_later_in_os_environ_does_not_switch_it_off(monkeypatch, allocator_defaults):
    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what Dask's nanny does before spawning
    with memory.retained_memory() as changed:
        assert changed == ("MALLOC_TRIM_THRESHOLD_" not in memory._environ_at_start())


@glibc
def test_progress_runner_keeps_memory_and_can_be_switched_off(monkeypatch, allocator_defaults):
    def step():
        yield ("work", 0, 1)
        return memory.retaining()

    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    assert run(step()) is True
    monkeypatch.setenv(memory.ENV_RETAIN_MEMORY, "0")
    assert run(step()) is False
    with memory.retained_memory() as changed:
        assert not changed
        assert not _freed_block_stays()
