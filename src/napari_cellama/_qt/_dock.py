"""The base of every napari-cellama dock: the viewer it serves and that viewer's session."""

from __future__ import annotations

from qtpy.QtWidgets import QWidget


class SessionDock(QWidget):
    """A dock widget bound to ``napari_viewer`` and its :class:`~napari_cellama.session.CellamaSession`
    (``self.viewer``, ``self.session``): docks read and write the session, never each other."""

    def __init__(self, napari_viewer):
        super().__init__()
        from ..session import get_session

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
