"""The embedding part of a dock's parameters: device and embedding mode (issue 15).

One form for every dock that embeds sentences: the names, the default and the order come
from :mod:`napari_cellama._constants` (``DEVICES``, ``EMBEDDING_MODES``, ``DEFAULT_DEVICE``)
and the choice becomes one :class:`~napari_cellama.core.embedding_options.EmbeddingOptions`,
so a dock never spells a mode itself. The first mode entry, **default**, leaves the mode to
the device (``onnx`` on a CPU, ``exact`` on a GPU: ``EmbeddingOptions(mode=None)``); the mode a
run used is recorded with its results (``result.params["embedding_mode"]``) and shown in the
dock's status line.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel

from .._constants import (
    DEFAULT_DEVICE,
    DEFAULT_EMBED_MODE,
    DEVICES,
    EMBED_MODE_EXACT,
    EMBED_MODE_FAST,
    EMBED_MODE_ONNX,
    EMBED_MODE_SURROGATE,
    EMBEDDING_MODES,
)

MODE_HINTS = {
    None: f"default: {DEFAULT_EMBED_MODE} on a CPU, {EMBED_MODE_EXACT} on a GPU",
    EMBED_MODE_EXACT: "the model itself in PyTorch, float32 (the reference)",
    EMBED_MODE_ONNX: "the same float32 model run by ONNX Runtime (same labels, faster on a CPU)",
    EMBED_MODE_FAST: "ONNX Runtime with int8 weights (approximate, fastest transformer mode)",
    EMBED_MODE_SURROGATE: "a learned map from sentence to embedding, fitted on exact embeddings of a sample "
                          "and checked against them; cells whose label is not robust are re-embedded exactly. "
                          "Provisional labels appear before the run ends. For whole slides.",
}
"""One line per mode for the tooltips (``None``: the device's default)."""


class EmbeddingForm:
    """Device and embedding-mode rows added to a dock's ``QFormLayout``.

    ``device_combo`` lists ``DEVICES`` (``auto`` first); ``mode_combo`` lists "default" then
    ``EMBEDDING_MODES`` (item data: the mode, ``None`` for the default). :meth:`options`
    returns the :class:`EmbeddingOptions` of the choice.
    """

    def __init__(self, form: QFormLayout):
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setCurrentText(DEFAULT_DEVICE)
        self.device_combo.setToolTip("auto: a GPU (CUDA, then Apple MPS) when present, else the CPU")
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("default", None)
        for mode in EMBEDDING_MODES:
            self.mode_combo.addItem(mode, mode)
        for i in range(self.mode_combo.count()):
            self.mode_combo.setItemData(i, MODE_HINTS.get(self.mode_combo.itemData(i), ""), Qt.ToolTipRole)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.mode_combo.currentIndexChanged.connect(lambda _i: self._show_hint())
        self._show_hint()
        form.addRow("device", self.device_combo)
        form.addRow("embedding", self.mode_combo)
        form.addRow("", self.hint)

    def device(self) -> str:
        return self.device_combo.currentText()

    def mode(self) -> str | None:
        """The chosen mode, or None for the device's default."""
        return self.mode_combo.currentData()

    def set_mode(self, mode: str | None) -> None:
        """Choose a mode by name (None or "default": the device's default)."""
        index = self.mode_combo.findData(None if mode in (None, "", "default") else str(mode).lower())
        if index < 0:
            raise ValueError(f"unknown embedding mode {mode!r}; use one of {', '.join(EMBEDDING_MODES)}")
        self.mode_combo.setCurrentIndex(index)

    def options(self, **fields):
        """:class:`~napari_cellama.core.embedding_options.EmbeddingOptions` of the choice
        (``fields``: model, cache, ...)."""
        from ..core.embedding_options import EmbeddingOptions

        return EmbeddingOptions(mode=self.mode(), device=self.device(), **fields)

    def _show_hint(self) -> None:
        text = MODE_HINTS.get(self.mode(), "")
        self.hint.setText(text if self.mode() == EMBED_MODE_SURROGATE else "")
        self.hint.setVisible(self.mode() == EMBED_MODE_SURROGATE)
        self.mode_combo.setToolTip(text)
