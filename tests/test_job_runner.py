"""The shared job runner: every step reaches ``progressed``, the bars redraw at a bounded rate.

Each repaint of a bar recomposes the whole napari window (its canvas is an OpenGL widget);
under software OpenGL that took the GUI thread ~114 s of a 488 s transfer of the full section
(py-spy, ``benchmarks/bench_provisional.py``), on the same two cores as the job. The runner
therefore draws a new stage at once and a running count at most every ``MIN_REDRAW_S``.
"""

from __future__ import annotations

import time

from napari_cellama._qt._runner import MIN_REDRAW_S, JobRunner


def _fast_job(n: int):
    for i in range(n):
        yield "embedding query", i, n
    yield "kNN", 0, 1
    yield "kNN", 1, 1
    return "result"


def _slow_job(n: int, pause: float):
    for i in range(n):
        time.sleep(pause)
        yield "fitting", i + 1, n
    return n


def _run(qtbot, runner: JobRunner, job, *args):
    drawn, steps, results = [], [], []
    runner.bar.valueChanged.connect(lambda _v: drawn.append((runner.bar.format(), runner.bar.value())))
    runner.progressed.connect(steps.append)
    runner.start(job, *args, on_done=results.append)
    qtbot.waitUntil(lambda: not runner.busy, timeout=30_000)
    return drawn, steps, results


def test_fast_steps_reach_listeners_but_redraw_rarely(qtbot):
    runner = JobRunner()
    drawn, steps, results = _run(qtbot, runner, _fast_job, 3000)
    assert results == ["result"]
    assert len(steps) == 3002  # every step is re-emitted, e.g. for the provisional layer
    counts = [v for f, v in drawn if f.startswith("embedding query")]
    assert len(counts) < 50, len(counts)  # 3,000 steps in well under a second: few redraws (3,000 before)
    assert any(f.startswith("kNN") for f, _ in drawn)  # a new stage is drawn at once
    assert runner.bar.format() == "done"


def test_slow_steps_are_each_drawn(qtbot):
    runner = JobRunner()
    drawn, steps, _ = _run(qtbot, runner, _slow_job, 4, MIN_REDRAW_S * 1.2)
    assert [s[1] for s in steps] == [1, 2, 3, 4]
    values = [v for f, v in drawn if f.startswith("fitting")]
    assert values[:4] == [1, 2, 3, 4], drawn


def test_latest_count_shown_after_a_burst(qtbot):
    """A burst within one interval is not lost: its last count is drawn when the interval is up."""

    def burst_then_wait():
        for i in range(1, 101):
            yield "predicting", i, 1000
        time.sleep(MIN_REDRAW_S * 4)
        yield "predicting", 1000, 1000
        return None

    runner = JobRunner()
    seen = []
    runner.bar.valueChanged.connect(lambda v: seen.append(v))
    runner.start(burst_then_wait)
    qtbot.waitUntil(lambda: 100 in seen, timeout=10_000)  # drawn while the job still sleeps
    assert runner.busy
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert seen.index(100) < seen.index(1000)


def _memory_job():
    from napari_cellama.core.memory import retaining

    yield "work", 0, 1
    return retaining()


def test_jobs_run_with_freed_memory_kept_and_restored_after(qtbot, monkeypatch, allocator_defaults):
    """A job runs inside ``retained_memory`` (still a generator: its progress is reported), and
    the allocator's defaults are back when it ends (napari's own memory is not kept)."""
    from napari_cellama.core import memory

    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    runner = JobRunner()
    _drawn, steps, results = _run(qtbot, runner, _memory_job)
    assert steps and results == [memory._libc() is not None]
    assert not memory.retaining()


def test_cancelled_job_gives_the_memory_setting_back(qtbot, monkeypatch, allocator_defaults):
    from napari_cellama.core import memory

    monkeypatch.delenv(memory.ENV_RETAIN_MEMORY, raising=False)
    runner = JobRunner()
    runner.start(_slow_job, 200, 0.02)
    qtbot.waitUntil(lambda: memory.retaining() or memory._libc() is None, timeout=10_000)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=30_000)
    assert runner.was_cancelled and not memory.retaining()
