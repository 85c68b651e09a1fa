"""A small histogram of the shown annotation's confidences beside the threshold slider.

:class:`ConfidenceHistogram` follows the session's shown annotation (``session.transfer``):
it bins every cell's confidence once per annotation (50 bins over 0..1) and, when the
threshold moves, only moves the vertical line at ``min_confidence`` and greys the bars below
it (the cells that become ``Unassigned``), so dragging the slider stays instant on 100k cells.
Matplotlib, no computation beyond ``numpy.histogram``.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from .._constants import CONFIDENCE
from ._wiring import rewire

N_BINS = 50
ABOVE_COLOR = "#4c9be8"
BELOW_COLOR = "#7f7f7f"
LINE_COLOR = "#ff5050"


class ConfidenceHistogram(QWidget):
    """Histogram of confidences with a line at the current threshold (see the module docstring)."""

    def __init__(self, session, parent=None, height: int = 64):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.session = session
        self.annotation = None
        self.counts = np.zeros(N_BINS, dtype=np.int64)
        self.edges = np.linspace(0.0, 1.0, N_BINS + 1)
        self.figure = Figure(figsize=(3, 0.8))
        self.figure.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.32)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(height)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.ax = self.figure.add_subplot(111)
        self.bars = None
        self.line = None
        self.canvas.setToolTip("confidence of every cell; the red line is the threshold, grey bars are the "
                                "cells it leaves Unassigned")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.canvas)
        session.events.transfer.connect(self._on_transfer)
        self._on_transfer(session.transfer)

    @property
    def threshold(self) -> float | None:
        """Where the line is (None without an annotation)."""
        return None if self.line is None else float(self.line.get_xdata()[0])

    def _on_transfer(self, state) -> None:
        annotation = None if state is None else state.annotation
        rewire(self.annotation, annotation, {"labels_changed": self._on_labels})
        self.annotation = annotation
        self._rebin()

    def _on_labels(self, cause: str) -> None:
        if cause == "threshold":
            self.set_threshold(self.annotation.min_confidence)

    def _rebin(self) -> None:
        ax = self.ax
        ax.clear()
        self.bars = self.line = None
        if self.annotation is None:
            ax.set_axis_off()
            self.canvas.draw_idle()
            return
        conf = self.annotation.table[CONFIDENCE].to_numpy(dtype=float)
        conf = conf[np.isfinite(conf)]
        self.counts, _ = np.histogram(np.clip(conf, 0.0, 1.0), bins=self.edges)
        self.bars = ax.bar(self.edges[:-1], self.counts, width=np.diff(self.edges), align="edge",
                           color=ABOVE_COLOR, linewidth=0)
        self.line = ax.axvline(0.0, color=LINE_COLOR, linewidth=1.5)
        ax.set_xlim(0.0, 1.0)
        ax.set_yticks([])
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.tick_params(axis="x", labelsize=6, pad=1, length=2)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        self.set_threshold(self.annotation.min_confidence)

    def set_threshold(self, value: float) -> None:
        """Move the line to ``value`` and grey the bars below it (no re-binning)."""
        if self.line is None:
            return
        value = float(value)
        self.line.set_xdata([value, value])
        for left, bar in zip(self.edges[:-1], self.bars):
            bar.set_color(BELOW_COLOR if left + 1e-9 < value else ABOVE_COLOR)
        self.canvas.draw_idle()

    def below(self) -> int:
        """Cells in the bars below the line (what the histogram shows as greyed)."""
        if self.line is None:
            return 0
        return int(self.counts[self.edges[:-1] + 1e-9 < self.threshold].sum())
