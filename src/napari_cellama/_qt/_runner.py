"""The one way every dock runs a long step: off the GUI thread, with progress and Cancel.

:class:`JobRunner` owns a progress bar, a Cancel button and the running worker. A job is a
function returning a progress generator (``yield (stage, done, total)`` ... ``return
result``, see :mod:`napari_cellama.core._progress`) or a plain function. The runner

* runs it in a napari ``thread_worker`` (``create_worker``); one job at a time, except a
  job started from another's ``on_done`` with ``chained=True`` (e.g. the demo, then its
  reference's columns);
* shows stage and count in its own bar and in a ``napari.utils.progress`` bar (``describe``
  may word the stage, e.g. with the current loss) and re-emits each step as ``progressed``.
  The bars follow a new stage at once but a running count at most every
  :data:`MIN_REDRAW_S`: each repaint recomposes the whole window (its canvas is an OpenGL
  widget), which under software OpenGL (remote desktops, ``xvfb``) costs tens of
  milliseconds of the two cores the job itself needs; the latest count is shown when the
  interval is up;
* on Cancel calls ``worker.quit()``: a generator stops at its next yield (a batch of
  embeddings or a training step at most), ``on_done`` is not called, so nothing is half-added;
* turns errors into a napari notification (``CellamaInputError`` messages as they are,
  anything else with its type) and a ``failed`` signal, leaving the viewer usable;
  :meth:`fail` reports a dock's own input errors the same way.

``run_sync`` runs the same job on the calling thread (tests and scripts).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QWidget

from ..core._progress import run as run_generator
from ..core.memory import retained_memory
from ..validators import CellamaInputError

MIN_REDRAW_S = 0.25
"""Shortest interval between two redraws of the bars within one stage (seconds)."""


def _keeping_memory(job: Callable) -> Callable:
    """``job`` run inside :func:`~napari_cellama.core.memory.retained_memory` (freed memory
    stays in the process until the job ends); a generator function stays one, so the worker
    still reports its progress. A cancelled job leaves it when its generator is closed."""
    if inspect.isgeneratorfunction(job):
        @functools.wraps(job)
        def steps(*args, **kwargs):
            with retained_memory():
                return (yield from job(*args, **kwargs))

        return steps

    @functools.wraps(job)
    def call(*args, **kwargs):
        with retained_memory():
            return job(*args, **kwargs)

    return call


def error_message(err: BaseException) -> str:
    """One line for the user."""
    if isinstance(err, CellamaInputError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class JobRunner(QObject):
    """Progress bar + Cancel button + one background worker (see module docstring)."""

    started = Signal(str)
    finished = Signal()
    failed = Signal(str)
    cancelled = Signal()
    progressed = Signal(object)
    """Emitted with each ``(stage, done, total)`` of the running job."""

    def __init__(self, parent: QWidget | None = None, describe: Callable | None = None):
        super().__init__(parent)
        self.describe = describe
        """Optional ``describe(stage, done, total) -> str`` for the bars' text."""
        self.widget = QWidget(parent)
        layout = QHBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("idle")
        self.bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("stop the running step; earlier results stay as they are")
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel_button)
        self._workers: list = []
        self._pbar = None
        self.last_error: str | None = None
        self.was_cancelled = False
        self._shown: tuple[object, float] = (None, 0.0)  # (stage, monotonic time) last drawn
        self._pending = None  # the latest step not yet drawn
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.timeout.connect(self._show_pending)

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        return bool(self._workers)

    @property
    def worker(self):
        """The running worker (the latest one when a job was chained), or None."""
        return self._workers[-1] if self._workers else None

    def start(self, job: Callable, *args, on_done: Callable | None = None, what: str = "working",
              chained: bool = False, **kwargs):
        """Run ``job(*args, **kwargs)`` in a worker; ``on_done(result)`` on the GUI thread.

        Returns the worker, or None (with a notification) while another job runs, unless
        ``chained`` (a follow-up started from a running job's ``on_done``).
        """
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.busy and not chained:
            self.fail("another step is still running; wait for it or press Cancel")
            return None
        self.last_error = None
        self.was_cancelled = False
        if self._pbar is not None:
            self._pbar.close()
        self._pbar = progress(total=0, desc=f"napari-cellama: {what}")
        self.bar.setRange(0, 0)
        self.bar.setFormat(what)
        self.cancel_button.setEnabled(True)
        # errors are reported here (notification + failed); napari must not re-raise them
        worker = create_worker(_keeping_memory(job), *args, _start_thread=False, _ignore_errors=True, **kwargs)
        if hasattr(worker, "yielded"):
            worker.yielded.connect(self._on_progress)
        if on_done is not None:
            worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._on_finished(worker))
        self._workers.append(worker)
        self.started.emit(what)
        worker.start()
        return worker

    def run_sync(self, job: Callable, *args, on_done: Callable | None = None, **kwargs):
        """Run the job here and now (no thread); progress still updates the bar."""
        self.last_error = None
        try:
            out = job(*args, **kwargs)
            if inspect.isgenerator(out):
                out = run_generator(out, lambda s, d, t: self._on_progress((s, d, t)))
        except Exception as err:
            self._on_error(err)
            raise
        if on_done is not None:
            on_done(out)
        self._reset("done")
        return out

    def cancel(self) -> None:
        """Stop the running job(s) at the next progress step."""
        if not self._workers:
            return
        self.was_cancelled = True
        self.bar.setFormat("cancelling…")
        self.cancel_button.setEnabled(False)
        for worker in list(self._workers):
            worker.quit()

    def fail(self, message: str) -> None:
        """Report a problem: a napari error notification, ``last_error`` and ``failed(message)``."""
        from napari.utils.notifications import show_error

        self.last_error = message
        show_error(f"napari-cellama: {message}")
        self.failed.emit(message)

    # ------------------------------------------------------------------ slots
    def _on_progress(self, value) -> None:
        try:
            stage, done, total = value
        except (TypeError, ValueError):
            return
        wait = self._shown[1] + MIN_REDRAW_S - time.monotonic()
        if stage == self._shown[0] and wait > 0 and done < total:
            self._pending = value  # drawn when the interval is up (or replaced by a later step)
            if not self._flush.isActive():
                self._flush.start(max(int(wait * 1000), 1))
        else:
            self._show(value)
        self.progressed.emit(value)

    def _show_pending(self) -> None:
        if self._pending is not None and self._workers:
            self._show(self._pending)

    def _show(self, value) -> None:
        """Draw one step in both bars."""
        stage, done, total = value
        self._pending = None
        self._flush.stop()
        self._shown = (stage, time.monotonic())
        text = self.describe(stage, done, total) if self.describe is not None else f"{stage}: {done}/{total}"
        total = max(int(total), 1)
        self.bar.setRange(0, total)
        self.bar.setFormat(text)  # before the value: a valueChanged listener reads both
        self.bar.setValue(min(int(done), total))
        pbar = self._pbar  # a late signal may arrive after the job finished and closed it
        if pbar is not None:
            pbar.set_description(f"napari-cellama: {text}")
            pbar.total = total
            pbar.update(int(done) - pbar.n)  # update() notifies napari's activity panel

    def _on_error(self, err: BaseException) -> None:
        self.fail(error_message(err))
        self.bar.setFormat("failed")

    def _on_finished(self, worker) -> None:
        gen = getattr(worker, "_gen", None)  # superqt's generator worker; a cancelled job's
        if gen is not None:  # generator is closed now, so its cleanup (retained_memory) runs
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - a job's cleanup must not leave the runner busy
                logging.getLogger(__name__).exception("closing a finished job's generator failed")
        if worker in self._workers:
            self._workers.remove(worker)
        if self._workers:  # a chained job is still running
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        cancelled = self.was_cancelled
        failed = self.last_error is not None
        self._reset("cancelled" if cancelled else "failed" if failed else "done")
        if cancelled:
            self.cancelled.emit()
        self.finished.emit()

    def _reset(self, text: str) -> None:
        self._pending = None
        self._flush.stop()
        self._shown = (None, 0.0)
        self.cancel_button.setEnabled(False)
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if text == "done" else 0)
        self.bar.setFormat(text)
