"""The transfer dock's embedding form: modes and devices from _constants, one EmbeddingOptions."""

from __future__ import annotations

import pytest

from napari_cellama._constants import DEFAULT_DEVICE, DEVICES, EMBED_MODE_SURROGATE, EMBEDDING_MODES


@pytest.mark.gui
def test_the_form_offers_every_mode_and_builds_the_options(qtbot):
    from qtpy.QtWidgets import QFormLayout, QWidget

    from napari_cellama._qt.embedding_form import EmbeddingForm
    from napari_cellama.core.embedding_options import EmbeddingOptions

    host = QWidget()
    qtbot.addWidget(host)
    form = EmbeddingForm(QFormLayout(host))
    modes = [form.mode_combo.itemData(i) for i in range(form.mode_combo.count())]
    assert modes == [None, *EMBEDDING_MODES]
    assert [form.device_combo.itemText(i) for i in range(form.device_combo.count())] == list(DEVICES)
    assert form.device() == DEFAULT_DEVICE == "auto" and form.mode() is None
    assert form.options(cache=True) == EmbeddingOptions(mode=None, device="auto", cache=True)

    form.set_mode("Surrogate")
    assert form.mode() == EMBED_MODE_SURROGATE and not form.hint.isHidden()
    assert form.options().surrogate
    form.set_mode("default")
    assert form.mode() is None and form.hint.isHidden()
    with pytest.raises(ValueError, match="unknown embedding mode"):
        form.set_mode("bogus")
