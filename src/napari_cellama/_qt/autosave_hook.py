"""Auto-save in the transfer dock (Qt side of :mod:`napari_cellama.io.autosave`).

:func:`install_autosave` gives the dock an :class:`~napari_cellama.io.autosave.AutoSaver`:
after each run and each edit (or undo, threshold change) a save is scheduled, at most one every
``min_interval`` seconds; the annotation is snapshotted on the GUI thread (~0.1 s on 84k cells) and
written in a background thread. Closing the dock or quitting removes the auto-save. When the
dock starts and a crashed session left one, a bar at the top of the dock asks "Restore the
auto-saved session from <time>?" (Restore / Discard).
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from ..io.autosave import (
    DEFAULT_AUTOSAVE_INTERVAL_S,
    AutoSaver,
    discard_autosave,
    pending_autosave,
    restore_autosave,
)
from ..validators import CellamaInputError


class AutosaveHook(QObject):
    """Schedules auto-saves of a transfer dock's annotation and offers a crashed one back."""

    def __init__(self, dock, saver: AutoSaver | None = None):
        super().__init__(dock)
        self.dock = dock
        self.saver = saver or AutoSaver()
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.save_now)
        self._thread: threading.Thread | None = None
        self._annotation = None
        self.pending = pending_autosave(self.saver.folder)
        self.banner = self._build_banner() if self.pending else None
        dock.session.events.transfer.connect(self._on_transfer)
        saver = self.saver  # the dock may be gone when these run: capture the saver only
        dock.destroyed.connect(lambda *_: saver.discard())
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(saver.discard)

    # ------------------------------------------------------------------ saving
    def _on_transfer(self, state=None) -> None:
        try:
            self.timer.isActive()
        except RuntimeError:  # the dock (and this hook) is gone
            return
        ann = None if state is None else state.annotation
        if self._annotation is not None:
            try:
                self._annotation.labels_changed.disconnect(self._on_change)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._annotation = ann
        if ann is not None:
            ann.labels_changed.connect(self._on_change)
            self._on_change()

    def _on_change(self, *_args) -> None:
        self.saver.note_change()
        if not self.timer.isActive():
            self.timer.start(int(1000 * max(self.saver.seconds_until_due(), 0.5)))

    def save_now(self, wait: bool = False) -> None:
        """Snapshot the annotation here, write it in a background thread (``wait``: join it)."""
        ann = self.dock.annotation
        if ann is None or not self.saver.dirty:
            return
        if self._thread is not None and self._thread.is_alive():  # one writer at a time: try again later
            self.timer.start(1000)
            return
        snapshot = ann.snapshot_parts()  # ~0.1 s on 84k cells; rebuilt in the thread
        result = self.dock.result
        inputs = self.dock._inputs()
        self.saver.dirty = False
        self._thread = threading.Thread(target=self._write, args=(snapshot, result, inputs), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()

    def _write(self, snapshot, result, inputs) -> None:
        try:
            from ..core.provenance import from_snapshot

            self.saver.save(from_snapshot(snapshot), result, inputs)
        except Exception as err:  # noqa: BLE001 - an auto-save must never take the session down
            self.saver.last_error = f"{type(err).__name__}: {err}"

    # ------------------------------------------------------------------ restoring
    def _build_banner(self) -> QFrame:
        info = self.pending
        banner = QFrame()
        banner.setFrameShape(QFrame.StyledPanel)
        row = QHBoxLayout(banner)
        self.banner_label = QLabel(
            f"Restore the auto-saved session from {info.get('time')} ({int(info.get('n_cells', 0)):,} cells, "
            f"{int(info.get('n_manual', 0)):,} manual labels)? napari-cellama did not close cleanly.")
        self.banner_label.setWordWrap(True)
        self.restore_button = QPushButton("Restore")
        self.restore_button.clicked.connect(lambda: self.restore())
        self.discard_button = QPushButton("Discard")
        self.discard_button.clicked.connect(lambda: self.discard())
        row.addWidget(self.banner_label, 1)
        row.addWidget(self.restore_button)
        row.addWidget(self.discard_button)
        return banner

    def restore(self):
        """Restore the pending auto-save into the dock (opening its Xenium run if needed)."""
        info = self.pending
        if info is None:
            return None
        try:
            saved = restore_autosave(info)
            self.dock._ensure_run_open(saved)
        except CellamaInputError as err:
            self.dock.runner.fail(f"could not restore the auto-saved session: {err}")
            return None
        self.dock.show_annotation(saved.annotation, saved.transfer_result())
        self.dock.status.setText(f"restored the auto-saved session from {info.get('time')}")
        self.discard()
        return saved

    def discard(self) -> None:
        """Drop the pending auto-save and hide the question."""
        if self.pending is not None:
            discard_autosave(self.pending)
        self.pending = None
        if self.banner is not None:
            self.banner.hide()


def install_autosave(dock, min_interval: float = DEFAULT_AUTOSAVE_INTERVAL_S) -> AutosaveHook:
    """Give the transfer ``dock`` auto-saves and, after a crash, the question to restore one."""
    hook = AutosaveHook(dock, AutoSaver(min_interval=min_interval))
    if hook.banner is not None:
        dock.layout().insertWidget(0, hook.banner)
    return hook
