"""Progress protocol shared by every long step.

A long step is a generator that yields ``(stage, done, total)`` tuples and returns
its result (``return value`` inside the generator). :func:`run` is the plain
synchronous wrapper; the widgets hand the same generator to napari's
``thread_worker``, whose ``yielded`` signal drives a progress bar and whose
``quit()`` cancels the work between two yields.
"""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

from .memory import retained_memory

T = TypeVar("T")

Progress = tuple[str, int, int]
"""``(stage, done, total)``: the stage name, items done and items in the stage."""

ProgressGenerator = Generator[Progress, None, T]
ProgressCallback = Callable[[str, int, int], None]


def run(gen: Generator[Progress, None, T], callback: ProgressCallback | None = None) -> T:
    """Drive a progress generator to the end and return its result.

    ``callback(stage, done, total)`` is called for every progress tuple. Freed memory stays
    in the process until the step ends (:func:`~napari_cellama.core.memory.retained_memory`).
    """
    with retained_memory():
        while True:
            try:
                stage, done, total = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(stage, done, total)
